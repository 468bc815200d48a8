"""What a layer sees and what its error costs, measured on calibration data: layer inputs and their
statistics, the BatchNorm after a layer, importance weights, bias correction, error feedback."""
