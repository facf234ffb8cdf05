"""sagactl: the command-line front door that provisions infrastructure and runs the saga system."""
