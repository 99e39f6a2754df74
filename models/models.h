// Umbrella header of dtrain_models.
#pragma once

#include "models/mlp.h"
#include "models/model_io.h"
#include "models/onnx_export.h"
#include "models/registry.h"
