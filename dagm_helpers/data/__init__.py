"""The data layer: files -> sample index (layout) -> arrays or tf.data (pipeline)."""
