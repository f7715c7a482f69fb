// See tbrm_gloo_shim.h: the torch wheel lacks the Gloo headers.
#pragma once
#include "../tbrm_gloo_shim.h"
