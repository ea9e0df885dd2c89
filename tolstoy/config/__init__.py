"""params.yaml's sections as typed models (params), the kinds of value they hold (fields), and the
accelerate configs the launcher runs (accelerate)."""
