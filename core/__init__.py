"""What every other package shares, depending on none of them: errors, the config schema and
its files, the train step's state and events, and distributed and file helpers."""
