"""The model zoo: one folder per model (model.onnx, manifest.toml, MODEL_CARD.md, and the
script that made it). A package only so the files install with edgert."""
