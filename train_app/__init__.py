"""The training app behind train.py: model and Hydra config schema (not part of the library)."""
