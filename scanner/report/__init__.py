"""Reports: scoring, view models and rendering. Reads the store only; never probes, never runs the engine."""
