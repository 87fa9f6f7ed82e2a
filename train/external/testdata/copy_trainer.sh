#!/bin/sh
# A minimal external trainer: copies a known ONNX model and writes its card.
# Usage: copy_trainer.sh DATASET OUTPUT_DIR (MODEL_SRC and CARD_SRC in env).
set -eu
case "${1:-}" in
  -h|--help) sed -n '2,3s/^# //p' "$0"; exit 0 ;;
esac
[ $# -ge 2 ] || { echo "usage: copy_trainer.sh DATASET OUTPUT_DIR" >&2; exit 2; }
out="$2"
echo "dataset $1 has $(($(wc -l < "$1") - 1)) rows"
echo "params $FLYWHEEL_PARAMS" >&2
if [ -n "${LEAK_CHECK:-}" ]; then env | grep -E 'TOKEN|FLYWHEEL_ADMIN' && exit 3; fi
case "${MODE:-ok}" in
  fail) echo "boom: out of memory" >&2; exit 7 ;;
  sleep) sh -c 'sleep 30' ; exit 0 ;;
  nothing) exit 0 ;;
esac
cp "$MODEL_SRC" "$out/model.onnx"
cp "$CARD_SRC" "$out/model.json"
echo "done"
