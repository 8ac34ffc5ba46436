// SPDX-License-Identifier: MIT
/*
 * cuda_driver.h - the CUDA driver API, resolved at run time.
 *
 * libvkv never links libcuda: it must load and run (on the host backend) on
 * machines without a GPU or without the driver. The driver is opened with
 * dlopen("libcuda.so.1") the first time anything needs it, and every entry
 * point is looked up through cuGetProcAddress (with dlsym as the fallback
 * for drivers that lack it), asking for the ABI of the cuda.h we were
 * compiled against. The result is one table of function pointers, loaded
 * once per process and read-only afterwards, shared by every part that
 * talks to the driver (the cuda backend, the kernel launcher, tiering, the
 * LD_PRELOAD shim).
 *
 * The table's fields have the names of the driver functions, so calls read
 * like the CUDA documentation: vkv__cu()->cuMemMap(...). The field types come
 * from the declarations in <cuda.h> (which maps some names to versioned
 * ones, cuMemGetInfo -> cuMemGetInfo_v2; the field follows the same macro,
 * so callers never see the difference).
 *
 * Driver results become negative errno values in one place,
 * vkv__cu_error(), which also records the detail ("cuMemMap:
 * CUDA_ERROR_OUT_OF_MEMORY (2)") for vkv_strerror().
 *
 * Everything here exists only when VKV_HAVE_CUDA is defined (cuda.h found
 * at build time).
 */
#ifndef VKV_CUDA_DRIVER_H
#define VKV_CUDA_DRIVER_H

#ifdef VKV_HAVE_CUDA

#include <cuda.h>

/*
 * Every driver entry point in the table. To add one, add a line here: the
 * loader, the field and the name used for lookup all follow from it. The
 * CUDA test double (tests/cudadouble/) must implement every entry, since
 * the loader treats a missing one as an unusable driver.
 */
#define VKV_CU_FUNCS(X)                                                       \
	X(cuInit)                                                             \
	X(cuDriverGetVersion)                                                 \
	X(cuGetErrorName)                                                     \
	X(cuGetErrorString)                                                   \
	X(cuDeviceGet)                                                        \
	X(cuDeviceGetCount)                                                   \
	X(cuDeviceGetName)                                                    \
	X(cuDeviceGetAttribute)                                               \
	X(cuDeviceTotalMem)                                                   \
	X(cuDeviceGetPCIBusId)                                                \
	X(cuDevicePrimaryCtxRetain)                                           \
	X(cuDevicePrimaryCtxRelease)                                          \
	X(cuCtxSetCurrent)                                                    \
	X(cuCtxGetCurrent)                                                    \
	X(cuCtxSynchronize)                                                   \
	X(cuMemGetAllocationGranularity)                                      \
	X(cuMemAddressReserve)                                                \
	X(cuMemAddressFree)                                                   \
	X(cuMemCreate)                                                        \
	X(cuMemRelease)                                                       \
	X(cuMemMap)                                                           \
	X(cuMemUnmap)                                                         \
	X(cuMemSetAccess)                                                     \
	X(cuMemGetInfo)                                                       \
	X(cuMemcpyDtoD)                                                       \
	X(cuMemcpyDtoH)                                                       \
	X(cuMemcpyHtoD)                                                       \
	X(cuMemcpyDtoDAsync)                                                  \
	X(cuMemcpyDtoHAsync)                                                  \
	X(cuMemcpyHtoDAsync)                                                  \
	X(cuMemcpyAsync)                                                      \
	X(cuMemsetD8)                                                         \
	X(cuStreamCreate)                                                     \
	X(cuStreamDestroy)                                                    \
	X(cuStreamSynchronize)                                                \
	X(cuEventCreate)                                                      \
	X(cuEventRecord)                                                      \
	X(cuEventSynchronize)                                                 \
	X(cuEventDestroy)                                                     \
	X(cuEventElapsedTime)                                                 \
	X(cuMemHostRegister)                                                  \
	X(cuMemHostUnregister)                                                \
	X(cuMemAllocHost)                                                     \
	X(cuMemFreeHost)                                                      \
	X(cuModuleLoadData)                                                   \
	X(cuModuleUnload)                                                     \
	X(cuModuleGetFunction)                                                \
	X(cuLaunchKernel)

#define VKV_CU_FIELD(name) __typeof__(name) *name;

/* The driver's entry points. Read-only once vkv__cu() returned it. */
struct vkv_cu {
	int driver_version; /* cuDriverGetVersion: 12040 = 12.4 */
	VKV_CU_FUNCS(VKV_CU_FIELD)
};

#undef VKV_CU_FIELD

/*
 * The driver, loaded and initialised (cuInit) on first use. NULL when it
 * is not usable here (no libcuda.so.1, an entry point missing, cuInit
 * failed); the reason is then this thread's last error. Thread-safe; the
 * first call does the work, later calls are one load.
 */
const struct vkv_cu *vkv__cu(void);

/* Like vkv__cu(), with the reason as a negative errno: -ENODEV when there
 * is no driver or no device, -EIO for a broken driver. */
int vkv__cu_load(const struct vkv_cu **out);

/*
 * The one translation of a driver result: 0 for CUDA_SUCCESS, else a
 * negative errno (out of memory -> -ENOMEM, invalid value -> -EINVAL, no
 * device or invalid device -> -ENODEV, anything else -> -EIO) with the
 * detail "<call>: CUDA_ERROR_xxx (n)" recorded by vkv__set_error().
 */
int vkv__cu_error(CUresult res, const char *call);

/* The errno a result translates to, recording nothing. */
int vkv__cu_errno(CUresult res);

/* "CUDA_ERROR_OUT_OF_MEMORY", or "CUDA_ERROR_<n>" for an unknown code. */
const char *vkv__cu_result_name(CUresult res);

/* Call a table entry and translate its result; the expression names the
 * call in the detail. Use as: err = VKV_CU_CALL(cu, cuMemMap, addr, ...). */
#define VKV_CU_CALL(cu, fn, ...) vkv__cu_error((cu)->fn(__VA_ARGS__), #fn)

#endif /* VKV_HAVE_CUDA */
#endif /* VKV_CUDA_DRIVER_H */
