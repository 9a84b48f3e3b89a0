"""The method: adapters read from one hashed vector, fitting them, portable noise and the sampler."""
