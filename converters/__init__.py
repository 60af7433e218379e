"""The converter pipeline: teacher → distilled student → ONNX → int8 → TensorRT, each stage a
target of `converters.targets` (the training side's bridge to `runtime/`)."""
