"""``local_hessian``calibration (placeholder: registers nothing until its implementation lands)."""
