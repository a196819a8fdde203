"""Omnidesk's inference: features, Thinker, Talker, Token2Wav, model files. No Qt here."""
