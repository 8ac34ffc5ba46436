// SPDX-License-Identifier: MIT
/*
 * prog.cu - an ordinary CUDA runtime API program for tests/gpu/shim.sh.
 *
 * It knows nothing of vkv: cudaMalloc/cudaFree of many sizes, a pitched
 * and a managed allocation, stream-ordered cudaMallocAsync/cudaFreeAsync,
 * kernels reading and writing all of it, cudaMemGetInfo. It prints what it
 * computed, summed on the host in a fixed order, so that a run under
 * LD_PRELOAD=libvkv_preload.so and a run without must print the same text.
 * nvcc links the runtime statically by default, which is the case the
 * shim's dlsym interposition exists for; shim.sh also builds it with
 * -cudart shared.
 */
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(call)                                                              \
	do {                                                                  \
		cudaError_t e_ = (call);                                      \
		if (e_ != cudaSuccess) {                                      \
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, \
				#call, cudaGetErrorString(e_));               \
			exit(1);                                              \
		}                                                             \
	} while (0)

__global__ void init(float *x, size_t n, float seed)
{
	for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		x[i] = __sinf((float)(i % 4096) * 0.001f + seed);
}

__global__ void saxpy(float a, const float *x, float *y, size_t n)
{
	for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		y[i] = a * x[i] + y[i];
}

static double host_sum(const float *d, size_t n)
{
	std::vector<float> h(n);
	double s = 0;

	CK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
	for (size_t i = 0; i < n; i++)
		s += h[i];
	return s;
}

int main()
{
	size_t freeb, total;
	double sum = 0;
	cudaStream_t s;

	CK(cudaSetDevice(0));
	CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
	/* Synchronous allocations of many sizes, some alive across rounds. */
	std::vector<float *> keep;
	for (int round = 0; round < 40; round++) {
		size_t n = 1 + ((size_t)round * 7919 % 64) * ((round % 3) ? 4096 : 65536);
		float *x, *y;

		CK(cudaMalloc(&x, n * sizeof(float)));
		CK(cudaMalloc(&y, n * sizeof(float)));
		init<<<64, 256>>>(x, n, (float)round);
		init<<<64, 256>>>(y, n, 0.5f);
		saxpy<<<64, 256>>>(2.0f, x, y, n);
		CK(cudaGetLastError());
		sum += host_sum(y, n);
		CK(cudaFree(x));
		if (round % 4 == 0)
			keep.push_back(y);
		else
			CK(cudaFree(y));
	}
	for (float *p : keep)
		CK(cudaFree(p));
	printf("sync checksum %.17g\n", sum);

	/* Stream-ordered allocations, reused on the same stream. */
	sum = 0;
	for (int round = 0; round < 40; round++) {
		size_t n = 1024 + (size_t)(round % 5) * 300000;
		float *x;

		CK(cudaMallocAsync(&x, n * sizeof(float), s));
		init<<<64, 256, 0, s>>>(x, n, (float)round * 0.25f);
		saxpy<<<64, 256, 0, s>>>(0.5f, x, x, n);
		CK(cudaStreamSynchronize(s));
		sum += host_sum(x, n);
		CK(cudaFreeAsync(x, s));
	}
	CK(cudaStreamSynchronize(s));
	printf("async checksum %.17g\n", sum);

	/* Pitched and managed memory (the shim passes managed through). */
	{
		float *p, *m;
		size_t pitch;

		CK(cudaMallocPitch(&p, &pitch, 1000 * sizeof(float), 64));
		init<<<64, 256>>>(p, pitch / sizeof(float) * 64, 3.0f);
		CK(cudaMallocManaged(&m, 4096 * sizeof(float)));
		init<<<16, 256>>>(m, 4096, 1.0f);
		CK(cudaDeviceSynchronize());
		sum = 0;
		for (int i = 0; i < 4096; i++)
			sum += m[i];
		printf("pitch %s managed checksum %.17g\n",
		       pitch >= 1000 * sizeof(float) ? "ok" : "short", sum);
		CK(cudaFree(p));
		CK(cudaFree(m));
	}
	CK(cudaMemGetInfo(&freeb, &total));
	printf("meminfo %s\n", freeb <= total && total > 0 ? "consistent" : "inconsistent");
	CK(cudaStreamDestroy(s));
	return 0;
}
