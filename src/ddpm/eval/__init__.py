"""Sample-quality evaluation: metrics over feature sets, feature networks, reference statistics."""
