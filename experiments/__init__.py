"""What works over many runs: sweeps and grids, Optuna studies, tables and figures, the cluster
launcher, and evaluating or exporting finished runs. Each command's ``main`` lives here."""
