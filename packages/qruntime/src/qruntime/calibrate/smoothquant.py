"""``smoothquant``calibration (placeholder: registers nothing until its implementation lands)."""
