"""Ray Train's per-worker entry point, kept in a module without heavy imports: the Train controller
unpickles it too, and should not pay for importing torch and every method to do so."""


def train_loop_per_worker(config: dict) -> None:
    from rayda.train.loop import train_loop

    train_loop(config)
