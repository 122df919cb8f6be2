"""Default configurations shipped with edgert (read with importlib.resources): the embedded default
pipeline (sim.toml) and the fleet policy example. A package only so the files install with edgert."""
