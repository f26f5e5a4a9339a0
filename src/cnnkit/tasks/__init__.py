"""Tasks: what differs between classification, detection, ...; the engine runs them all."""
