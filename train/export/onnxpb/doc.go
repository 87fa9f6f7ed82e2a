// Package onnxpb holds the Go types of the ONNX protobuf schema (IR version
// 8, as shipped with ONNX 1.12 in Debian's python3-onnx), generated from
// onnx.proto (Apache-2.0, Copyright the ONNX Project Contributors) by protoc
// and protoc-gen-go. Regenerate with `make proto` (or `go generate` here).
package onnxpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go_opt=Monnx.proto=github.com/flywheel-ml/flywheel/train/export/onnxpb onnx.proto
