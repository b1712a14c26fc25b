"""Learn: a case-based dermoscopy quiz on held-out HAM10000 cases (case bank, sets, scoring, notes)."""
