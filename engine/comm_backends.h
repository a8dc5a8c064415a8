// The Comm implementations that need optional libraries, built only when those are found.
#pragma once

#include <memory>

#include "engine/comm.h"

namespace psgd {

#ifdef PSGD_WITH_MPI
// Initialises MPI (finalised when the Comm is destroyed): CPU collectives over MPI_COMM_WORLD.
std::unique_ptr<Comm> make_mpi_comm();
#endif

}  // namespace psgd
