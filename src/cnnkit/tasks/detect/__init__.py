"""Object detection: data formats, detectors on cnnkit backbones, NMS, mAP, the predictor."""
