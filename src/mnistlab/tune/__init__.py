"""Hyperparameter search with Optuna (`mnistlab tune`, the `tune` extra): the search space (space),
the shared study and its tickets (study), one trial (trial), the loop and workers (search), and what a
study writes and prints (records)."""
