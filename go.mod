module github.com/flywheel-ml/flywheel

go 1.24

require (
	github.com/yalue/onnxruntime_go v1.27.0
	gopkg.in/yaml.v3 v3.0.1
)
