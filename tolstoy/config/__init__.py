"""params.yaml's sections (params) and the rules their values follow (rules)."""
