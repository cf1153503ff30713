"""Deployment: DSNNs as ONNX models run by onnxruntime, and timing on the device at hand."""
