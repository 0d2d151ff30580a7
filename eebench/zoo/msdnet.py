"""MSDNet (placeholder until the MSDNet module lands)."""
