// Umbrella header of dtrain_core.
#pragma once

#include "core/checkpoint.h"
#include "core/data_source.h"
#include "core/device.h"
#include "core/errors.h"
#include "core/file_util.h"
#include "core/gradient_sync.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "core/model.h"
#include "core/run_config.h"
#include "core/stop_signal.h"
#include "core/trainer.h"
