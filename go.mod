module github.com/flywheel-ml/flywheel

go 1.24

require (
	github.com/hashicorp/go-retryablehttp v0.7.8
	github.com/mattn/go-sqlite3 v1.14.53
	github.com/yalue/onnxruntime_go v1.27.0
)

require github.com/hashicorp/go-cleanhttp v0.5.2 // indirect
