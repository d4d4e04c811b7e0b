"""Models: devices, the embedded model, loading, what can be wrong with one, mapped weights."""
