"""Generation: the sampling math, and the resumable sample folder around it."""
