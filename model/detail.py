"""The Detail setting's values, apart from the vision plan so that the command line reads them
without loading torch: how many embeddings a picture gets (`model.vision_plan` decides)."""

from typing import Literal

Detail = Literal["auto", "sharp", "quick"]
DETAILS: tuple[Detail, ...] = ("auto", "sharp", "quick")  # Automatic first: the default
