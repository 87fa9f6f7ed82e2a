#!/usr/bin/python3
"""A small external trainer that follows Flywheel's contract.

Usage: linear_trainer.py DATASET.csv OUTPUT_DIR

Reads the CSV (date, features..., target), fits ridge-regularised linear
least squares with numpy, and writes OUTPUT_DIR/model.onnx (input "features"
FP32 [-1, F], output "prediction" FP32 [-1, 1]) and OUTPUT_DIR/model.json.
Parameters come from FLYWHEEL_PARAMS (JSON): "l2" (default 0).
"""
import sys

if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):  # before the heavy imports
    print(__doc__.strip(), file=sys.stdout if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else sys.stderr)
    sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)

import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    dataset, out = sys.argv[-2], sys.argv[-1]
    params = json.loads(os.environ.get("FLYWHEEL_PARAMS") or "{}")
    target = os.environ.get("FLYWHEEL_TARGET") or "target"
    with open(dataset, newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    feats = header[1:-1]
    if header[-1] != target:
        sys.exit(f"last column is {header[-1]!r}, want target {target!r}")
    x = np.array([[float(v) for v in r[1:-1]] for r in rows], dtype=np.float64)
    y = np.array([float(r[-1]) for r in rows], dtype=np.float64)
    print(f"training linear model on {len(rows)} rows x {len(feats)} features", flush=True)
    xb = np.hstack([x, np.ones((len(x), 1))])
    l2 = float(params.get("l2", 0.0))
    reg = l2 * np.eye(xb.shape[1])
    reg[-1, -1] = 0
    coef = np.linalg.solve(xb.T @ xb + reg, xb.T @ y)
    w, b = coef[:-1], coef[-1]
    pred = x @ w + b
    mae = float(np.mean(np.abs(pred - y)))
    print(f"train mae {mae:.4f}", flush=True)

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "B"], ["prediction"])],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(feats)])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(w.reshape(-1, 1).astype(np.float32), "W"),
         numpy_helper.from_array(np.array([b], dtype=np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "model.onnx"))
    card = {
        "name": os.environ.get("FLYWHEEL_MODEL") or "model", "version": 0, "created_at": "1970-01-01T00:00:00Z", "task": "regression",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, len(feats)], "features": feats}],
        "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}],
        "target": target,
        "training": {"algorithm": os.environ.get("FLYWHEEL_ALGORITHM") or "linear", "params": params,
                     "seed": int(os.environ.get("FLYWHEEL_SEED") or 0),
                     "dataset": {"name": os.path.basename(dataset), "digest": "", "rows": len(rows),
                                 "from": rows[0][0], "until": rows[-1][0]},
                     "trainer_version": "linear_trainer.py"},
        "metrics": {"train": {"mae": mae}},
    }
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(card, f, indent=2)
    print("wrote model.onnx and model.json", flush=True)


if __name__ == "__main__":
    main()
