// Umbrella header of dtrain_data.
#pragma once

#include "data/fetch.h"
#include "data/idx.h"
#include "data/mnist.h"
#include "data/sampler.h"
