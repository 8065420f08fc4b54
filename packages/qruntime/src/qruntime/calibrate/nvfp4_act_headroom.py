"""``nvfp4_act_headroom``calibration (placeholder: registers nothing until its implementation lands)."""
