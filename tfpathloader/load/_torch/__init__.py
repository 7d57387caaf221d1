"""Private PyTorch machinery of the torch backend: batch slots, wire batches, private APIs."""
