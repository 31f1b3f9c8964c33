// argmax_bench: the cost of turning K class-probability maps on the model grid into labels on the
// input grid, by the ITK layer's running argmax (ComboSegProbabilitiesToLabels) or by ITK's
// ResampleImageFilter, one class at a time, with the argmax kept over the resampled maps.
//   argmax_bench running|resample [nx ny nz classes threads]
// prints seconds; run it under /usr/bin/time -v for the peak memory (docs/design.md, "Threads and
// memory"). The default geometry is the quickstart's: ch2 (181x217x181, 1 mm) and 27 classes.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "itkComboSegProcessing.h"
#include "itkLinearInterpolateImageFunction.h"
#include "itkResampleImageFilter.h"

namespace
{

using FloatImage = itk::Image<float, 3>;

FloatImage::Pointer ImageOf(const itk::ComboSegGrid &grid)
{
    auto image = FloatImage::New();
    FloatImage::RegionType region;
    FloatImage::DirectionType direction;
    for (unsigned int i = 0; i < 3; ++i) {
        region.SetSize(i, static_cast<itk::SizeValueType>(grid.size[i]));
        for (unsigned int j = 0; j < 3; ++j) direction(i, j) = grid.direction[3 * i + j];
    }
    image->SetRegions(region);
    image->SetSpacing(grid.spacing.data());
    image->SetOrigin(grid.origin.data());
    image->SetDirection(direction);
    image->Allocate();
    return image;
}

// ITK's way: each class resampled onto the output grid by ResampleImageFilter, the argmax kept
// against the best value so far (two full-size float maps beyond the labels).
void ResampleEachClass(int32_t *labels, const itk::ComboSegGrid &output, const float *probabilities,
                       const itk::ComboSegGrid &model, int32_t classes, int threads)
{
    const int64_t n = output.NumberOfVoxels(), m = model.NumberOfVoxels();
    std::vector<float> best(static_cast<size_t>(n), -1.0f);
    FloatImage::Pointer classMap = ImageOf(model);
    const FloatImage::Pointer target = ImageOf(output);
    for (int32_t k = 0; k < classes; ++k) {
        std::memcpy(classMap->GetBufferPointer(), probabilities + k * m,
                    static_cast<size_t>(m) * sizeof(float));
        classMap->Modified();
        auto resample = itk::ResampleImageFilter<FloatImage, FloatImage, double>::New();
        resample->SetInput(classMap);
        resample->SetInterpolator(itk::LinearInterpolateImageFunction<FloatImage, double>::New());
        resample->SetOutputParametersFromImage(target);
        resample->SetDefaultPixelValue(-1.0f);
        if (threads > 0) resample->SetNumberOfWorkUnits(static_cast<itk::ThreadIdType>(threads));
        resample->Update();
        const float *p = resample->GetOutput()->GetBufferPointer();
        for (int64_t i = 0; i < n; ++i)
            if (p[i] > best[static_cast<size_t>(i)]) {
                best[static_cast<size_t>(i)] = p[i];
                labels[i] = k;
            }
    }
}

} // namespace

int main(int argc, char **argv)
{
    if (argc < 2 ||
        (std::strcmp(argv[1], "running") != 0 && std::strcmp(argv[1], "resample") != 0)) {
        std::fprintf(stderr, "usage: %s running|resample [nx ny nz classes threads]\n", argv[0]);
        return 2;
    }
    itk::ComboSegGrid grid;
    grid.size = {{argc > 2 ? std::atol(argv[2]) : 181, argc > 3 ? std::atol(argv[3]) : 217,
                  argc > 4 ? std::atol(argv[4]) : 181}};
    const int32_t classes = argc > 5 ? std::atoi(argv[5]) : 27;
    const int threads = argc > 6 ? std::atoi(argv[6]) : 2;
    const int64_t m = grid.NumberOfVoxels();
    // Smooth made-up probabilities: class k peaks along a plane of its own.
    std::vector<float> probabilities(static_cast<size_t>(m) * static_cast<size_t>(classes));
    for (int32_t k = 0; k < classes; ++k)
        for (int64_t i = 0; i < m; ++i)
            probabilities[static_cast<size_t>(k * m + i)] =
                1.0f /
                (1.0f + static_cast<float>(((i % grid.size[0]) + (i / grid.size[0]) % 7 + 3 * k) %
                                           classes));
    std::vector<int32_t> labels(static_cast<size_t>(m));
    const auto start = std::chrono::steady_clock::now();
    if (argv[1][0] == 'r' && argv[1][1] == 'u')
        itk::ComboSegProbabilitiesToLabels(labels.data(), grid, probabilities.data(), grid, classes,
                                           0.0f, threads);
    else ResampleEachClass(labels.data(), grid, probabilities.data(), grid, classes, threads);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s seconds=%.3f label0=%d\n", argv[1], seconds,
                labels[static_cast<size_t>(m / 2)]);
    return 0;
}
