"""Engine saturation: the inference engine's own /metrics, re-exported under neutral names."""
