"""Named workloads shipped with the project (TOML files)."""
