"""Escalation of uncertain or severe clips to a multimodal LLM and to human review."""
