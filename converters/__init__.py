"""The converter pipeline: teacher → distilled student → ONNX → int8 → TensorRT, and the
evaluation and demo report of those artifacts (the training side's bridge to `runtime/`)."""
