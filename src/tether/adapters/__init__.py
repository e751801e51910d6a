"""Framework adapters: agents written with other frameworks, served as tether agents."""
