"""The image history pool: the discriminator also sees earlier generators' fakes."""
from __future__ import annotations

import torch


class ImagePool:
    """A buffer of up to `size` generated images (Shrivastava et al. 2017; CycleGAN keeps 50).

    query(images) stores each image while the pool fills and returns it unchanged; once full, each
    image is, with probability 0.5, swapped with a uniformly chosen stored one (the stored one is
    returned, the new one kept). Randomness comes from torch's global CPU generator, so a seed and
    a restored RNG state reproduce it. Images are kept detached on their own device (no host copy
    per step); state_dict() hands out CPU copies for checkpoints.
    """

    def __init__(self, size: int = 50):
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] fakes -> [N, C, H, W] detached fakes for the discriminator's update."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()) < 0.5:
                i = int(torch.randint(self.size, ()))
                out.append(self.images[i].to(image.device, image.dtype))
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": [im.cpu() for im in self.images]}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size:
            raise ValueError(f"checkpoint pool holds size {state['size']}, this pool {self.size}")
        self.images = [im.clone() for im in state["images"]]
