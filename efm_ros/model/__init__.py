"""The Embodied Foundation Model: bins, network, export, and the torch-free runtime.

- ``bins``: action / steps-to-go tokenisation (numpy).
- ``efficientnet``: EfficientNet-Lite0 with the shipped ImageNet weights (torch).
- ``text``: MiniLM instruction embeddings and the cached instruction table (numpy; torch on a miss).
- ``network``: ``EFM`` — one network, two heads; ``EFMConfig``; safetensors checkpoints (torch).
- ``export``: ONNX graphs + ``manifest.json``; ``efm-ros export RUN --out models/NAME`` (torch).
- ``manifest``: write / verify ``manifest.json`` (json + hashlib).
- ``runtime``: ``load_model(dir) -> OnnxEFM`` with ONNX Runtime only — what robots import.

Nothing is imported here, so ``efm_ros.model.runtime`` stays free of torch.
"""
