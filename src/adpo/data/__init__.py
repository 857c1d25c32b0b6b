"""``adpo.data``: dataset rows for the trainers (validation, normalisation, generated tasks)."""
