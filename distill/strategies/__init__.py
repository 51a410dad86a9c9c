"""Distillation strategies beyond plain KD: schedules, feature matching, progressive,
born-again and data-free distillation. ``run_strategy`` (distill.strategies.runner) trains
the final student the config's ``strategy`` section asks for."""
