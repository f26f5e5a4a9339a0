"""The tutorials' Keras model on arrays saved by seeds_cnn.py; run by a Python with TensorFlow.

usage: keras_reference.py ARRAYS.npz EPOCHS BATCH_SIZE -> one JSON line on stdout
"""

import json
import sys
import time

import numpy as np


def main() -> None:
    import keras
    import tensorflow as tf
    from keras import layers

    path, epochs, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    arrays = np.load(path)
    x_train = arrays["x_train"].astype("float32") / 255.0  # (N, 32, 32, 3), as the tutorial
    x_test = arrays["x_test"].astype("float32") / 255.0
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(shape=x_train.shape[1:]),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(128, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    model.fit(
        x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[Timer()]
    )
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    images_per_second = len(x_train) * len(seconds) / sum(seconds)
    print(
        json.dumps(
            {
                "framework": f"keras {keras.__version__} / tensorflow {tf.__version__}",
                "params": model.count_params(),
                "test_accuracy": float(accuracy),
                "epoch_seconds": seconds,
                "images_per_second": images_per_second,
            }
        )
    )


if __name__ == "__main__":
    main()
