"""The converter pipeline: teacher → distilled student → ONNX → int8 → TensorRT."""
