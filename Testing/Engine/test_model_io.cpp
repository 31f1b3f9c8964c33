// Model metadata, safetensors files and model files: defaults, validation of every field,
// round trips, atomic saves and hostile files.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "comboseg/comboseg.h"
#include "internal.h"
#include "safetensors.h"

namespace
{

// A scratch folder per test, removed afterwards.
class TempDir
{
public:
  TempDir()
  {
    const ::testing::TestInfo *info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::string(COMBOSEG_BINARY_DIR) + "/Testing/tmp_model_io_" + info->test_suite_name() + "_" + info->name() +
            "_" + std::to_string(getpid());
    std::string cmd = "rm -rf '" + path_ + "' && mkdir -p '" + path_ + "'";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
  }
  ~TempDir()
  {
    chmod(path_.c_str(), 0755);
    std::string cmd = "rm -rf '" + path_ + "'";
    (void)std::system(cmd.c_str());
  }
  std::string File(const std::string &name) const { return path_ + "/" + name; }
  const std::string &Path() const { return path_; }

private:
  std::string path_;
};

std::string ReadBytes(const std::string &path)
{
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteBytes(const std::string &path, const std::string &bytes)
{
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool Exists(const std::string &path)
{
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// Splits a safetensors file into its header JSON and data section, and joins them back.
struct Parts
{
  std::string header, data;
};

Parts Split(const std::string &bytes)
{
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return {bytes.substr(8, n), bytes.substr(8 + n)};
}

std::string Join(const std::string &header, const std::string &data)
{
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string Replace(std::string s, const std::string &from, const std::string &to)
{
  size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << "'" << from << "' not in the header";
  if (at != std::string::npos)
    s.replace(at, from.size(), to);
  return s;
}

bool Contains(const char *text, const char *word)
{
  return std::strstr(text, word) != nullptr;
}

class ModelIo : public ::testing::Test
{
protected:
  void SetUp() override { ASSERT_EQ(cs_context_init(&ctx_), CS_OK); }
  void TearDown() override { cs_context_free(ctx_); }

  // A small model with non-default metadata in every field.
  cs_model_info SmallInfo(int dims = 3, int channels = 2, int classes = 3)
  {
    cs_unet_config arch = cs_unet_config_default();
    arch.spatial_dims = dims;
    arch.in_channels = channels;
    arch.num_classes = classes;
    arch.base_filters = 2;
    arch.levels = 2;
    arch.leaky_slope = 0.02f;
    arch.norm_epsilon = 3e-5f;
    cs_model_info info;
    EXPECT_EQ(cs_model_info_init(&info, &arch), CS_OK);
    std::snprintf(info.channels[0].name, CS_NAME_MAX, "CT \"soft\" \\ tissue");
    info.channels[0].modality = CS_MODALITY_CT;
    info.channels[0].norm = CS_NORM_CLIP_SCALE;
    info.channels[0].clip_low = -1000.0f;
    info.channels[0].clip_high = 1000.1f;
    info.channels[0].mean = 0.1f;
    info.channels[0].std = 300.3f;
    if (channels > 1)
    {
      std::snprintf(info.channels[1].name, CS_NAME_MAX, "PET");
      info.channels[1].modality = CS_MODALITY_PET;
      info.channels[1].norm = CS_NORM_ZSCORE_NONZERO;
    }
    std::snprintf(info.classes[1].name, CS_NAME_MAX, "liver");
    info.classes[1].value = 6;
    info.classes[1].rgb[0] = 221;
    if (classes > 2)
      std::snprintf(info.classes[2].name, CS_NAME_MAX, "left kidney \xc3\xa9");
    info.spacing[0] = 0.7;
    info.spacing[1] = 0.8;
    info.spacing[2] = 2.5;
    std::memcpy(info.orientation, "LPS", 4);
    info.patch_size[0] = 16;
    info.patch_size[1] = 8;
    info.patch_size[2] = dims == 3 ? 4 : 1;
    info.loss.kind = CS_LOSS_FOCAL_TVERSKY;
    info.loss.alpha = 0.3f;
    info.loss.beta = 0.7f;
    info.loss.gamma = 0.75f;
    info.loss.tversky_alpha = 0.4f;
    info.loss.tversky_beta = 0.6f;
    info.loss.dice_include_background = 1;
    info.loss.batch_dice = 1;
    std::snprintf(info.name, CS_NAME_MAX, "abdomen-test");
    std::snprintf(info.description, CS_TEXT_MAX, "A test model.\nSecond line.");
    std::snprintf(info.training_data, CS_TEXT_MAX, "synthetic volumes");
    std::snprintf(info.licence, CS_TEXT_MAX, "CC-BY-4.0");
    return info;
  }

  cs_model_t Create(const cs_model_info &info, uint64_t seed = 7)
  {
    cs_model_t m = nullptr;
    EXPECT_EQ(cs_model_create(ctx_, &info, seed, &m), CS_OK) << cs_context_last_error(ctx_);
    return m;
  }

  // Saves a small model and returns its path.
  std::string SaveSmall(const TempDir &dir, const std::string &name = "m.safetensors")
  {
    cs_model_t m = Create(SmallInfo());
    std::string path = dir.File(name);
    EXPECT_EQ(cs_model_save(ctx_, m, path.c_str()), CS_OK) << cs_context_last_error(ctx_);
    cs_model_free(m);
    return path;
  }

  // Loads path expecting failure; returns the message.
  std::string LoadFails(const std::string &path)
  {
    cs_model_t m = nullptr;
    cs_status st = cs_model_load(ctx_, path.c_str(), &m);
    EXPECT_NE(st, CS_OK);
    EXPECT_EQ(m, nullptr);
    if (m)
      cs_model_free(m);
    return cs_context_last_error(ctx_);
  }

  cs_context_t ctx_ = nullptr;
};

void ExpectSameInfo(const cs_model_info &a, const cs_model_info &b)
{
  EXPECT_EQ(a.format_version, b.format_version);
  EXPECT_EQ(a.arch.spatial_dims, b.arch.spatial_dims);
  EXPECT_EQ(a.arch.in_channels, b.arch.in_channels);
  EXPECT_EQ(a.arch.num_classes, b.arch.num_classes);
  EXPECT_EQ(a.arch.base_filters, b.arch.base_filters);
  EXPECT_EQ(a.arch.levels, b.arch.levels);
  EXPECT_EQ(a.arch.leaky_slope, b.arch.leaky_slope);
  EXPECT_EQ(a.arch.norm_epsilon, b.arch.norm_epsilon);
  for (int c = 0; c < a.arch.in_channels; ++c)
  {
    EXPECT_STREQ(a.channels[c].name, b.channels[c].name);
    EXPECT_EQ(a.channels[c].modality, b.channels[c].modality);
    EXPECT_EQ(a.channels[c].norm, b.channels[c].norm);
    EXPECT_EQ(a.channels[c].clip_low, b.channels[c].clip_low);
    EXPECT_EQ(a.channels[c].clip_high, b.channels[c].clip_high);
    EXPECT_EQ(a.channels[c].mean, b.channels[c].mean);
    EXPECT_EQ(a.channels[c].std, b.channels[c].std);
  }
  for (int k = 0; k < a.arch.num_classes; ++k)
  {
    EXPECT_EQ(a.classes[k].value, b.classes[k].value);
    EXPECT_STREQ(a.classes[k].name, b.classes[k].name);
    EXPECT_EQ(std::memcmp(a.classes[k].rgb, b.classes[k].rgb, 3), 0);
  }
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(a.spacing[i], b.spacing[i]);
  EXPECT_STREQ(a.orientation, b.orientation);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(a.patch_size[i], b.patch_size[i]);
  EXPECT_EQ(a.loss.kind, b.loss.kind);
  EXPECT_EQ(a.loss.alpha, b.loss.alpha);
  EXPECT_EQ(a.loss.beta, b.loss.beta);
  EXPECT_EQ(a.loss.gamma, b.loss.gamma);
  EXPECT_EQ(a.loss.tversky_alpha, b.loss.tversky_alpha);
  EXPECT_EQ(a.loss.tversky_beta, b.loss.tversky_beta);
  EXPECT_EQ(a.loss.dice_include_background, b.loss.dice_include_background);
  EXPECT_EQ(a.loss.batch_dice, b.loss.batch_dice);
  EXPECT_STREQ(a.name, b.name);
  EXPECT_STREQ(a.description, b.description);
  EXPECT_STREQ(a.training_data, b.training_data);
  EXPECT_STREQ(a.licence, b.licence);
  EXPECT_EQ(a.postprocessing.largest_component, b.postprocessing.largest_component);
  EXPECT_EQ(a.postprocessing.fill_holes, b.postprocessing.fill_holes);
}

// ---------------------------------------------------------------------------------------------
// Metadata

TEST(ModelInfo, DefaultsValidateForEveryClassCount)
{
  for (int dims = 2; dims <= 3; ++dims)
  {
    for (int k : {2, 3, 14, 57, CS_MAX_CLASSES})
    {
      cs_unet_config arch = cs_unet_config_default();
      arch.spatial_dims = dims;
      arch.num_classes = k;
      arch.in_channels = 3;
      cs_model_info info;
      ASSERT_EQ(cs_model_info_init(&info, &arch), CS_OK);
      char msg[256] = "unset";
      EXPECT_EQ(cs_model_info_validate(&info, msg, sizeof msg), CS_OK) << msg;
      EXPECT_STREQ(msg, "");
      EXPECT_EQ(info.format_version, CS_MODEL_FORMAT_VERSION);
      EXPECT_STREQ(info.classes[0].name, "background");
      EXPECT_EQ(info.classes[0].value, 0);
      EXPECT_EQ(info.classes[0].rgb[0] | info.classes[0].rgb[1] | info.classes[0].rgb[2], 0);
      std::set<std::string> names;
      std::set<int> colours;
      for (int i = 0; i < k; ++i)
      {
        names.insert(info.classes[i].name);
        colours.insert(info.classes[i].rgb[0] << 16 | info.classes[i].rgb[1] << 8 | info.classes[i].rgb[2]);
        EXPECT_EQ(info.classes[i].value, i);
      }
      EXPECT_EQ(names.size(), static_cast<size_t>(k));
      EXPECT_EQ(colours.size(), static_cast<size_t>(k)) << "class colours must be distinct";
      EXPECT_STREQ(info.classes[1].name, "class_1");
      EXPECT_STREQ(info.orientation, "RAS");
      for (int i = 0; i < 3; ++i)
        EXPECT_EQ(info.spacing[i], 1.0);
      EXPECT_EQ(info.patch_size[0], 64);
      EXPECT_EQ(info.patch_size[1], 64);
      EXPECT_EQ(info.patch_size[2], dims == 3 ? 64 : 1);
      EXPECT_EQ(info.loss.kind, CS_LOSS_COMBO_TVERSKY);
      EXPECT_FLOAT_EQ(info.loss.alpha, 0.5f);
      EXPECT_FLOAT_EQ(info.loss.beta, 0.5f);
    }
  }
}

TEST(ModelInfo, UnetConfigDefaultIsTheReferenceNetwork)
{
  cs_unet_config a = cs_unet_config_default();
  EXPECT_EQ(a.spatial_dims, 3);
  EXPECT_EQ(a.in_channels, 1);
  EXPECT_EQ(a.num_classes, 2);
  EXPECT_EQ(a.base_filters, 16);
  EXPECT_EQ(a.levels, 4);
  EXPECT_FLOAT_EQ(a.leaky_slope, 0.01f);
  EXPECT_FLOAT_EQ(a.norm_epsilon, 1e-5f);
  cs_model_info info;
  EXPECT_EQ(cs_model_info_init(&info, nullptr), CS_OK);
  EXPECT_EQ(info.arch.num_classes, 2);
  a.num_classes = 1;
  EXPECT_EQ(cs_model_info_init(&info, &a), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(cs_model_info_init(nullptr, nullptr), CS_ERR_INVALID_ARGUMENT);
}

struct BadField
{
  const char *what; // the word the message must contain
  std::function<void(cs_model_info &)> spoil;
};

TEST(ModelInfo, EachBadFieldIsRejectedWithItsName)
{
  const std::vector<BadField> cases = {
      {"format_version", [](cs_model_info &i) { i.format_version = 0; }},
      {"format_version", [](cs_model_info &i) { i.format_version = CS_MODEL_FORMAT_VERSION + 1; }},
      {"spatial_dims", [](cs_model_info &i) { i.arch.spatial_dims = 4; }},
      {"in_channels", [](cs_model_info &i) { i.arch.in_channels = 0; }},
      {"in_channels", [](cs_model_info &i) { i.arch.in_channels = CS_MAX_CHANNELS + 1; }},
      {"num_classes", [](cs_model_info &i) { i.arch.num_classes = 1; }},
      {"num_classes", [](cs_model_info &i) { i.arch.num_classes = CS_MAX_CLASSES + 1; }},
      {"base_filters", [](cs_model_info &i) { i.arch.base_filters = 0; }},
      {"base_filters", [](cs_model_info &i) { i.arch.base_filters = 1 << 20; }},
      {"levels", [](cs_model_info &i) { i.arch.levels = 0; }},
      {"levels", [](cs_model_info &i) { i.arch.levels = 7; }},
      {"leaky_slope", [](cs_model_info &i) { i.arch.leaky_slope = NAN; }},
      {"norm_epsilon", [](cs_model_info &i) { i.arch.norm_epsilon = 0; }},
      {"channels[1].name", [](cs_model_info &i) { i.channels[1].name[0] = 0; }},
      {"channels[0].name", [](cs_model_info &i) { std::memset(i.channels[0].name, 'a', CS_NAME_MAX); }},
      {"channels[1].modality", [](cs_model_info &i) { i.channels[1].modality = (cs_modality)9; }},
      {"channels[0].norm", [](cs_model_info &i) { i.channels[0].norm = (cs_norm_kind)-1; }},
      {"channels[1].norm", [](cs_model_info &i) { i.channels[1].norm = (cs_norm_kind)(CS_NORM_UPPER_PEAK + 1); }},
      {"channels[0].clip_low", [](cs_model_info &i) { i.channels[0].clip_low = 2000.0f; }},
      {"channels[0].std", [](cs_model_info &i) { i.channels[0].std = 0.0f; }},
      {"channels[1].mean", [](cs_model_info &i) { i.channels[1].mean = INFINITY; }},
      {"classes[2].name", [](cs_model_info &i) { i.classes[2].name[0] = 0; }},
      {"classes[2].name", [](cs_model_info &i) { std::strcpy(i.classes[2].name, "liver"); }},
      {"classes[1].name", [](cs_model_info &i) { std::memset(i.classes[1].name, 'b', CS_NAME_MAX); }},
      {"classes[2].value", [](cs_model_info &i) { i.classes[2].value = 6; }},
      {"classes[1].value", [](cs_model_info &i) { i.classes[1].value = -3; }},
      {"spacing[2]", [](cs_model_info &i) { i.spacing[2] = 0.0; }},
      {"spacing[0]", [](cs_model_info &i) { i.spacing[0] = NAN; }},
      {"spacing[1]", [](cs_model_info &i) { i.spacing[1] = INFINITY; }},
      {"orientation", [](cs_model_info &i) { std::memcpy(i.orientation, "RLS", 4); }},
      {"orientation", [](cs_model_info &i) { std::memcpy(i.orientation, "RA", 3); }},
      {"orientation", [](cs_model_info &i) { std::memcpy(i.orientation, "ras", 4); }},
      {"orientation", [](cs_model_info &i) { std::memcpy(i.orientation, "RASX", 4); }},
      {"patch_size[0]", [](cs_model_info &i) { i.patch_size[0] = 15; }},
      {"patch_size[1]", [](cs_model_info &i) { i.patch_size[1] = 0; }},
      {"patch_size[2]", [](cs_model_info &i) { i.patch_size[2] = -2; }},
      {"loss.kind", [](cs_model_info &i) { i.loss.kind = (cs_loss_kind)42; }},
      {"loss.alpha", [](cs_model_info &i) { i.loss.alpha = 1.5f; }},
      {"loss.beta", [](cs_model_info &i) { i.loss.beta = NAN; }},
      {"loss.gamma", [](cs_model_info &i) { i.loss.gamma = -1.0f; }},
      {"loss.tversky_alpha", [](cs_model_info &i) { i.loss.tversky_alpha = -0.1f; }},
      {"loss.tversky_alpha", [](cs_model_info &i) { i.loss.tversky_alpha = i.loss.tversky_beta = 0; }},
      {"loss.dice_include_background", [](cs_model_info &i) { i.loss.dice_include_background = 2; }},
      {"loss.batch_dice", [](cs_model_info &i) { i.loss.batch_dice = -1; }},
      {"name", [](cs_model_info &i) { std::memset(i.name, 'n', CS_NAME_MAX); }},
      {"description", [](cs_model_info &i) { std::memset(i.description, 'd', CS_TEXT_MAX); }},
      {"training_data", [](cs_model_info &i) { std::memset(i.training_data, 't', CS_TEXT_MAX); }},
      {"licence", [](cs_model_info &i) { std::memset(i.licence, 'l', CS_TEXT_MAX); }},
      {"postprocessing.largest_component", [](cs_model_info &i) { i.postprocessing.largest_component = 2; }},
      {"postprocessing.fill_holes", [](cs_model_info &i) { i.postprocessing.fill_holes = -1; }},
  };
  cs_unet_config arch = cs_unet_config_default();
  arch.in_channels = 2;
  arch.num_classes = 3;
  cs_model_info good;
  ASSERT_EQ(cs_model_info_init(&good, &arch), CS_OK);
  good.channels[0].norm = CS_NORM_CLIP_SCALE;
  good.channels[0].clip_low = -100.0f;
  good.channels[0].clip_high = 100.0f;
  good.channels[0].std = 50.0f;
  std::strcpy(good.classes[1].name, "liver");
  good.classes[1].value = 6;
  ASSERT_EQ(cs_model_info_validate(&good, nullptr, 0), CS_OK);
  for (const BadField &c : cases)
  {
    cs_model_info bad = good;
    c.spoil(bad);
    char msg[256] = "";
    EXPECT_EQ(cs_model_info_validate(&bad, msg, sizeof msg), CS_ERR_INVALID_ARGUMENT) << c.what;
    EXPECT_TRUE(Contains(msg, c.what)) << "message '" << msg << "' should name " << c.what;
    EXPECT_EQ(cs_model_info_validate(&bad, nullptr, 0), CS_ERR_INVALID_ARGUMENT);
  }
  // a 2D model needs patch z == 1
  cs_model_info flat = good;
  flat.arch.spatial_dims = 2;
  char msg[256];
  EXPECT_EQ(cs_model_info_validate(&flat, msg, sizeof msg), CS_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(msg, "patch_size[2]")) << msg;
  flat.patch_size[2] = 1;
  EXPECT_EQ(cs_model_info_validate(&flat, msg, sizeof msg), CS_OK) << msg;
  // other valid orientations
  for (const char *o : {"LPS", "SAR", "IPL", "ASL"})
  {
    cs_model_info ok = good;
    std::memcpy(ok.orientation, o, 4);
    EXPECT_EQ(cs_model_info_validate(&ok, msg, sizeof msg), CS_OK) << o << ": " << msg;
  }
  EXPECT_EQ(cs_model_info_validate(nullptr, msg, sizeof msg), CS_ERR_INVALID_ARGUMENT);
}

// ---------------------------------------------------------------------------------------------
// Model objects

TEST_F(ModelIo, CreateIsDeterministicPerSeed)
{
  cs_model_info info = SmallInfo();
  cs_model_t a = Create(info, 11), b = Create(info, 11), c = Create(info, 12);
  ASSERT_TRUE(a && b && c);
  ASSERT_GT(cs_model_num_parameters(a), 0);
  ASSERT_EQ(cs_model_num_parameters(a), cs_model_num_parameters(b));
  size_t bytes = sizeof(float) * static_cast<size_t>(cs_model_num_parameters(a));
  EXPECT_EQ(std::memcmp(a->params, b->params, bytes), 0);
  EXPECT_NE(std::memcmp(a->params, c->params, bytes), 0);
  ExpectSameInfo(*cs_model_get_info(a), info);
  cs_model_free(a);
  cs_model_free(b);
  cs_model_free(c);
  cs_model_free(nullptr);
  EXPECT_EQ(cs_model_num_parameters(nullptr), 0);
}

TEST_F(ModelIo, CreateRejectsInvalidInfoWithTheField)
{
  cs_model_info info = SmallInfo();
  info.spacing[1] = -1.0;
  cs_model_t m = reinterpret_cast<cs_model_t>(0x1);
  EXPECT_EQ(cs_model_create(ctx_, &info, 1, &m), CS_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(m, nullptr);
  EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "spacing[1]")) << cs_context_last_error(ctx_);
}

TEST_F(ModelIo, SetInfoKeepsTheArchitecture)
{
  cs_model_t m = Create(SmallInfo());
  ASSERT_NE(m, nullptr);
  cs_model_info info = *cs_model_get_info(m);
  std::strcpy(info.classes[2].name, "spleen");
  std::strcpy(info.description, "renamed");
  ASSERT_EQ(cs_model_set_info(ctx_, m, &info), CS_OK) << cs_context_last_error(ctx_);
  EXPECT_STREQ(cs_model_get_info(m)->classes[2].name, "spleen");
  EXPECT_STREQ(cs_model_get_info(m)->description, "renamed");

  cs_model_info other = info;
  other.arch.num_classes = 4;
  std::strcpy(other.classes[3].name, "extra");
  other.classes[3].value = 9;
  EXPECT_EQ(cs_model_set_info(ctx_, m, &other), CS_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "architecture")) << cs_context_last_error(ctx_);
  other = info;
  other.arch.leaky_slope = 0.1f;
  EXPECT_EQ(cs_model_set_info(ctx_, m, &other), CS_ERR_INVALID_ARGUMENT);
  other = info;
  other.orientation[0] = 'X';
  EXPECT_EQ(cs_model_set_info(ctx_, m, &other), CS_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "orientation"));
  EXPECT_STREQ(cs_model_get_info(m)->orientation, "LPS");
  cs_model_free(m);
}

// ---------------------------------------------------------------------------------------------
// Safetensors

TEST(Half, EveryHalfRoundTripsThroughFloat)
{
  for (uint32_t h = 0; h < 65536; ++h)
  {
    float f = cs_half_to_float(static_cast<uint16_t>(h));
    uint32_t exponent = (h >> 10) & 0x1f;
    if (exponent == 31 && (h & 0x3ff))
    {
      EXPECT_TRUE(std::isnan(f));
      EXPECT_TRUE(std::isnan(cs_half_to_float(cs_float_to_half(f))));
      continue;
    }
    ASSERT_EQ(cs_float_to_half(f), h) << "half " << h << " float " << f;
  }
  EXPECT_EQ(cs_half_to_float(0x3c00), 1.0f);
  EXPECT_EQ(cs_half_to_float(0xc000), -2.0f);
  EXPECT_EQ(cs_half_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(cs_half_to_float(0x0001), std::ldexp(1.0f, -24));
}

TEST(Half, FloatToHalfRoundsToNearestEven)
{
  EXPECT_EQ(cs_float_to_half(65519.0f), 0x7bff);
  EXPECT_EQ(cs_float_to_half(65520.0f), 0x7c00); // half-way to 65536 rounds up to infinity
  EXPECT_EQ(cs_float_to_half(1e9f), 0x7c00);
  EXPECT_EQ(cs_float_to_half(-1e9f), 0xfc00);
  EXPECT_EQ(cs_float_to_half(std::ldexp(1.0f, -25)), 0x0000); // tie goes to even (zero)
  EXPECT_EQ(cs_float_to_half(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(cs_float_to_half(std::ldexp(3.0f, -25)), 0x0002);        // 1.5 units: tie to even 2
  EXPECT_EQ(cs_float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00); // tie to even
  EXPECT_EQ(cs_float_to_half(1.0f + std::ldexp(3.0f, -11)), 0x3c02);
  EXPECT_EQ(cs_float_to_half(-0.0f), 0x8000);
  // random values: the half is the nearest representable one
  uint64_t state = 12345;
  for (int i = 0; i < 20000; ++i)
  {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    float f = std::ldexp(static_cast<float>((state >> 40) & 0xffffff) / 16777216.0f, -20 + (int)((state >> 20) % 36));
    uint16_t h = cs_float_to_half(f);
    float back = cs_half_to_float(h);
    float up = cs_half_to_float(static_cast<uint16_t>(h + 1));
    float down = h > 0 ? cs_half_to_float(static_cast<uint16_t>(h - 1)) : -back;
    ASSERT_LE(std::fabs(back - f), std::fabs(up - f)) << f;
    ASSERT_LE(std::fabs(back - f), std::fabs(down - f)) << f;
  }
  EXPECT_EQ(cs_bf16_to_float(cs_float_to_bf16(1.5f)), 1.5f);
  EXPECT_EQ(cs_float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80); // tie to even
  EXPECT_EQ(cs_float_to_bf16(1.0f + std::ldexp(3.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(cs_bf16_to_float(cs_float_to_bf16(NAN))));
}

class Safetensors : public ModelIo
{
};

TEST_F(Safetensors, TensorsAndMetadataRoundTrip)
{
  TempDir dir;
  std::vector<float> a(2 * 3 * 4), b(5), c(1);
  for (size_t i = 0; i < a.size(); ++i)
    a[i] = std::sin(static_cast<float>(i)) * 1e-3f;
  for (size_t i = 0; i < b.size(); ++i)
    b[i] = -static_cast<float>(i) * 1.25f;
  c[0] = 3.0f;
  const int64_t sa[3] = {2, 3, 4}, sb[1] = {5}, se[2] = {0, 7};
  cs_named_buffer tensors[4] = {{"layer.a", 3, sa, a.data()},
                                {"b \"quoted\"", 1, sb, b.data()},
                                {"scalar", 0, nullptr, c.data()},
                                {"empty", 2, se, nullptr}};
  cs_st_pair meta[3] = {{"step", "42"}, {"json", "{\"x\": [1, 2]}"}, {"empty", ""}};
  for (cs_st_dtype dtype : {CS_ST_F32, CS_ST_F16, CS_ST_BF16})
  {
    std::string path = dir.File("t.safetensors");
    ASSERT_EQ(cs_st_write(ctx_, path.c_str(), tensors, 4, meta, 3, dtype), CS_OK) << cs_context_last_error(ctx_);
    std::string bytes = ReadBytes(path);
    ASSERT_GE(bytes.size(), 8u);
    EXPECT_EQ(Split(bytes).header.size() % 8, 0u) << "header padded to 8 bytes";
    cs_st_file *f = nullptr;
    ASSERT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_OK) << cs_context_last_error(ctx_);
    ASSERT_EQ(f->num_tensors, 4);
    EXPECT_STREQ(cs_st_metadata(f, "step"), "42");
    EXPECT_STREQ(cs_st_metadata(f, "json"), "{\"x\": [1, 2]}");
    EXPECT_STREQ(cs_st_metadata(f, "empty"), "");
    EXPECT_EQ(cs_st_metadata(f, "absent"), nullptr);
    const cs_st_tensor *ta = cs_st_find(f, "layer.a");
    ASSERT_NE(ta, nullptr);
    EXPECT_EQ(ta->dtype, dtype);
    ASSERT_EQ(ta->ndim, 3);
    EXPECT_EQ(ta->shape[0], 2);
    EXPECT_EQ(ta->shape[2], 4);
    float tol = dtype == CS_ST_F32 ? 0.0f : dtype == CS_ST_F16 ? 1e-3f : 8e-3f;
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_NEAR(ta->data[i], a[i], std::fabs(a[i]) * tol + (dtype == CS_ST_F16 ? 1e-7f : 0.0f));
    const cs_st_tensor *tb = cs_st_find(f, "b \"quoted\"");
    ASSERT_NE(tb, nullptr);
    for (size_t i = 0; i < b.size(); ++i)
      EXPECT_EQ(tb->data[i], b[i]); // exact in all three
    const cs_st_tensor *ts = cs_st_find(f, "scalar");
    ASSERT_NE(ts, nullptr);
    EXPECT_EQ(ts->ndim, 0);
    EXPECT_EQ(ts->count, 1);
    EXPECT_EQ(ts->data[0], 3.0f);
    EXPECT_EQ(cs_st_find(f, "empty")->count, 0);

    std::vector<float> a2(a.size()), b2(b.size()), c2(1), e2(1);
    float *dst[4] = {a2.data(), b2.data(), c2.data(), e2.data()};
    ASSERT_EQ(cs_st_copy_tensors(ctx_, f, path.c_str(), tensors, 4, 0, dst), CS_OK) << cs_context_last_error(ctx_);
    if (dtype == CS_ST_F32)
      EXPECT_EQ(std::memcmp(a2.data(), a.data(), a.size() * 4), 0);
    EXPECT_EQ(b2, b);
    // a subset needs allow_extra
    EXPECT_EQ(cs_st_copy_tensors(ctx_, f, path.c_str(), tensors, 2, 0, dst), CS_ERR_FORMAT);
    EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "unexpected tensor"));
    EXPECT_EQ(cs_st_copy_tensors(ctx_, f, path.c_str(), tensors, 2, 1, dst), CS_OK);
    cs_st_free(f);
  }
}

TEST_F(Safetensors, WriterRejectsBadLists)
{
  TempDir dir;
  std::string path = dir.File("bad.safetensors");
  float v[2] = {1.0f, 2.0f};
  const int64_t s2[1] = {2}, neg[1] = {-1};
  cs_named_buffer dup[2] = {{"x", 1, s2, v}, {"x", 1, s2, v}};
  EXPECT_EQ(cs_st_write(ctx_, path.c_str(), dup, 2, nullptr, 0, CS_ST_F32), CS_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "repeats"));
  cs_named_buffer meta_name[1] = {{"__metadata__", 1, s2, v}};
  EXPECT_EQ(cs_st_write(ctx_, path.c_str(), meta_name, 1, nullptr, 0, CS_ST_F32), CS_ERR_INVALID_ARGUMENT);
  cs_named_buffer negative[1] = {{"x", 1, neg, v}};
  EXPECT_EQ(cs_st_write(ctx_, path.c_str(), negative, 1, nullptr, 0, CS_ST_F32), CS_ERR_INVALID_ARGUMENT);
  float big[2] = {1.0f, 70000.0f};
  cs_named_buffer too_big[1] = {{"x", 1, s2, big}};
  EXPECT_EQ(cs_st_write(ctx_, path.c_str(), too_big, 1, nullptr, 0, CS_ST_F16), CS_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "half"));
  cs_st_pair meta[2] = {{"k", "1"}, {"k", "2"}};
  cs_named_buffer ok[1] = {{"x", 1, s2, v}};
  EXPECT_EQ(cs_st_write(ctx_, path.c_str(), ok, 1, meta, 2, CS_ST_F32), CS_ERR_INVALID_ARGUMENT);
  EXPECT_FALSE(Exists(path));
}

// A file written by hand from the format description: F16, BF16 and F32 tensors in an order
// other than their data order, padding spaces after the JSON, and no metadata.
TEST_F(Safetensors, ReadsAHandWrittenFile)
{
  TempDir dir;
  std::string header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                       "\"h\":{\"dtype\":\"F16\",\"shape\":[2,1],\"data_offsets\":[0,4]},"
                       "\"b\":{\"shape\":[2],\"dtype\":\"BF16\",\"data_offsets\":[4,8]}}   ";
  std::string data;
  auto put16 = [&](uint16_t v) {
    data += static_cast<char>(v & 0xff);
    data += static_cast<char>(v >> 8);
  };
  auto put32 = [&](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    for (int i = 0; i < 4; ++i)
      data += static_cast<char>((u >> (8 * i)) & 0xff);
  };
  put16(0x3c00); // 1.0
  put16(0xc500); // -5.0
  put16(0x4049); // bf16 3.140625
  put16(0xbf80); // bf16 -1.0
  put32(0.25f);
  put32(-1e30f);
  std::string path = dir.File("hand.safetensors");
  WriteBytes(path, Join(header, data));
  cs_st_file *f = nullptr;
  ASSERT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_OK) << cs_context_last_error(ctx_);
  ASSERT_EQ(f->num_tensors, 3);
  EXPECT_EQ(f->num_metadata, 0);
  EXPECT_STREQ(f->tensors[0].name, "w");
  const cs_st_tensor *h = cs_st_find(f, "h"), *b = cs_st_find(f, "b"), *w = cs_st_find(f, "w");
  ASSERT_TRUE(h && b && w);
  EXPECT_EQ(h->data[0], 1.0f);
  EXPECT_EQ(h->data[1], -5.0f);
  EXPECT_EQ(b->data[0], 3.140625f);
  EXPECT_EQ(b->data[1], -1.0f);
  EXPECT_EQ(w->data[0], 0.25f);
  EXPECT_EQ(w->data[1], -1e30f);
  cs_st_free(f);
}

// Each broken header is an error whose message has the keyword.
TEST_F(Safetensors, RejectsBrokenHeaders)
{
  TempDir dir;
  const std::string data(16, '\0');
  const std::string t = "\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{" + t, "JSON"},
      {"[1,2]", "object"},
      {"{" + t + "} x", "after"},
      {"{\"t\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[0,16]}}", "dtype"},
      {"{\"t\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", "dtype"},
      {"{\"t\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,16]}}", "data_offsets"},
      {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", "shape"},
      {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4.5],\"data_offsets\":[0,16]}}", "shape"},
      {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}}", "data_offsets"},
      {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", "data_offsets"},
      {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4]}}", "data_offsets"},
      {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "data section"},
      {"{\"t\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]}}", "beyond"},
      {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
       "\"data_offsets\":[0,16]}}",
       "shape"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[4,16]}}",
       "overlaps"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
       "hole"},
      {"{" + t + "," + t + "}", "twice"},
      {"{\"__metadata__\":{\"k\":1}," + t + "}", "not a string"},
      {"{\"__metadata__\":{\"k\":{\"x\":\"y\"}}," + t + "}", "not a string"},
      {"{\"__metadata__\":[\"k\"]," + t + "}", "__metadata__"},
      {"{\"t\":[1,2]}", "not a JSON object"},
      {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4],\"data_offsets\":[0,16]}}", "dimensions"},
      {std::string(2000, '['), "JSON"},
  };
  std::string path = dir.File("broken.safetensors");
  for (const auto &c : cases)
  {
    WriteBytes(path, Join(c.first, data));
    cs_st_file *f = reinterpret_cast<cs_st_file *>(0x1);
    EXPECT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_ERR_FORMAT) << c.first;
    EXPECT_EQ(f, nullptr);
    EXPECT_TRUE(Contains(cs_context_last_error(ctx_), c.second.c_str()))
        << "header " << c.first.substr(0, 100) << ": message '" << cs_context_last_error(ctx_) << "' lacks '"
        << c.second << "'";
    EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "broken.safetensors"));
  }
}

TEST_F(Safetensors, RejectsImpossibleHeaderLengthsAndMissingFiles)
{
  TempDir dir;
  std::string path = dir.File("len.safetensors");
  for (uint64_t n : {UINT64_C(0), UINT64_C(1), UINT64_C(100), UINT64_C(1) << 40, UINT64_C(0xffffffffffffffff),
                     UINT64_C(0x8000000000000000)})
  {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i)
      bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    bytes += "{}";
    WriteBytes(path, bytes);
    cs_st_file *f = nullptr;
    EXPECT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_ERR_FORMAT) << n;
    EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "header length")) << cs_context_last_error(ctx_);
  }
  WriteBytes(path, "abc");
  cs_st_file *f = nullptr;
  EXPECT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_ERR_FORMAT);
  EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "truncated"));
  EXPECT_EQ(cs_st_read(ctx_, dir.File("absent.safetensors").c_str(), &f), CS_ERR_IO);
  EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "absent.safetensors"));
  EXPECT_EQ(cs_st_read(ctx_, dir.Path().c_str(), &f), CS_ERR_IO);
  // an empty tensor set is a valid file
  WriteBytes(path, Join("{}      ", ""));
  ASSERT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_OK) << cs_context_last_error(ctx_);
  EXPECT_EQ(f->num_tensors, 0);
  cs_st_free(f);
}

// Large hostile headers stay cheap: many tensors are checked in n log n, too many refused.
TEST_F(Safetensors, ManyTensorsAreBounded)
{
  TempDir dir;
  std::string path = dir.File("many.safetensors");
  auto header_of = [](int n, bool repeat) {
    std::string h = "{";
    for (int i = 0; i < n; ++i)
    {
      if (i)
        h += ",";
      h += "\"t" + std::to_string(repeat && i == n - 1 ? 0 : i) +
           "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
    }
    return h + "}";
  };
  WriteBytes(path, Join(header_of(60000, false), ""));
  cs_st_file *f = nullptr;
  ASSERT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_OK) << cs_context_last_error(ctx_);
  EXPECT_EQ(f->num_tensors, 60000);
  cs_st_free(f);
  WriteBytes(path, Join(header_of(60000, true), ""));
  EXPECT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_ERR_FORMAT);
  EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "t0 appears twice")) << cs_context_last_error(ctx_);
  WriteBytes(path, Join(header_of(CS_ST_MAX_TENSORS + 1, false), ""));
  EXPECT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_ERR_FORMAT);
  EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "more than")) << cs_context_last_error(ctx_);
}

// ---------------------------------------------------------------------------------------------
// Model files

TEST_F(ModelIo, SaveLoadRoundTripKeepsMetadataAndWeightsBitForBit)
{
  TempDir dir;
  for (int dims = 2; dims <= 3; ++dims)
  {
    cs_model_info info = SmallInfo(dims);
    if (dims == 2)
      info.channels[1].norm = CS_NORM_UPPER_PEAK; // the newest recipe's name round-trips too
    cs_model_t m = Create(info, 99);
    ASSERT_NE(m, nullptr);
    std::string path = dir.File("round.safetensors");
    ASSERT_EQ(cs_model_save(ctx_, m, path.c_str()), CS_OK) << cs_context_last_error(ctx_);
    cs_model_t back = nullptr;
    ASSERT_EQ(cs_model_load(ctx_, path.c_str(), &back), CS_OK) << cs_context_last_error(ctx_);
    ExpectSameInfo(*cs_model_get_info(back), *cs_model_get_info(m));
    ExpectSameInfo(*cs_model_get_info(back), info);
    EXPECT_EQ(std::memcmp(cs_model_get_info(back), cs_model_get_info(m), sizeof(cs_model_info)), 0);
    ASSERT_EQ(cs_model_num_parameters(back), cs_model_num_parameters(m));
    ASSERT_EQ(back->num_tensors, m->num_tensors);
    EXPECT_EQ(std::memcmp(back->params, m->params, sizeof(float) * static_cast<size_t>(cs_model_num_parameters(m))), 0);

    // identical predictions
    const int64_t size[3] = {8, 8, dims == 3 ? 4 : 1};
    const int64_t n = size[0] * size[1] * size[2];
    std::vector<float> image(2 * n);
    for (int64_t i = 0; i < 2 * n; ++i)
      image[i] = std::cos(0.37f * static_cast<float>(i));
    std::vector<float> l1(3 * n), l2(3 * n);
    ASSERT_EQ(cs_model_forward(ctx_, m, image.data(), 1, size, l1.data()), CS_OK) << cs_context_last_error(ctx_);
    ASSERT_EQ(cs_model_forward(ctx_, back, image.data(), 1, size, l2.data()), CS_OK);
    EXPECT_EQ(std::memcmp(l1.data(), l2.data(), l1.size() * sizeof(float)), 0);

    // saving again over the file gives the same bytes
    std::string first = ReadBytes(path);
    ASSERT_EQ(cs_model_save(ctx_, back, path.c_str()), CS_OK);
    EXPECT_EQ(ReadBytes(path), first);
    cs_model_free(m);
    cs_model_free(back);
  }
}

TEST_F(ModelIo, MetadataIsStringsOnlyAndReadableJson)
{
  TempDir dir;
  std::string path = SaveSmall(dir);
  cs_st_file *f = nullptr;
  ASSERT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_OK);
  EXPECT_STREQ(cs_st_metadata(f, "format"), "comboseg-model");
  EXPECT_STREQ(cs_st_metadata(f, "format_version"), "1");
  EXPECT_STREQ(cs_st_metadata(f, "in_channels"), "2");
  EXPECT_STREQ(cs_st_metadata(f, "orientation"), "LPS");
  EXPECT_STREQ(cs_st_metadata(f, "licence"), "CC-BY-4.0");
  ASSERT_NE(cs_st_metadata(f, "classes"), nullptr);
  EXPECT_TRUE(Contains(cs_st_metadata(f, "classes"), "\"name\":\"liver\""));
  EXPECT_TRUE(Contains(cs_st_metadata(f, "channels"), "\"modality\":\"ct\""));
  EXPECT_TRUE(Contains(cs_st_metadata(f, "loss"), "\"kind\":\"focal_tversky\""));
  // numbers are written as the shortest decimal that reads back exactly
  EXPECT_STREQ(cs_st_metadata(f, "leaky_slope"), "0.02");
  EXPECT_STREQ(cs_st_metadata(f, "norm_epsilon"), "3e-05");
  EXPECT_TRUE(Contains(cs_st_metadata(f, "channels"), "\"mean\":0.1,")) << cs_st_metadata(f, "channels");
  EXPECT_TRUE(Contains(cs_st_metadata(f, "loss"), "\"alpha\":0.3,")) << cs_st_metadata(f, "loss");
  EXPECT_STREQ(cs_st_metadata(f, "spacing"), "[0.7,0.8,2.5]");
  cs_st_free(f);
}

// The clean-up a model recommends travels with it; a file without the field (older files)
// recommends none.
TEST_F(ModelIo, RecommendedPostprocessingRoundTripsAndIsOptional)
{
  TempDir dir;
  for (const cs_postprocessing pp : {cs_postprocessing{1, 0}, cs_postprocessing{0, 1}, cs_postprocessing{1, 1}})
  {
    cs_model_info info = SmallInfo();
    info.postprocessing = pp;
    cs_model_t m = Create(info);
    ASSERT_NE(m, nullptr);
    const std::string path = dir.File("post.safetensors");
    ASSERT_EQ(cs_model_save(ctx_, m, path.c_str()), CS_OK) << cs_context_last_error(ctx_);
    cs_st_file *f = nullptr;
    ASSERT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_OK);
    const std::string expected = std::string("{\"largest_component\":") + (pp.largest_component ? "true" : "false") +
                                 ",\"fill_holes\":" + (pp.fill_holes ? "true" : "false") + "}";
    EXPECT_STREQ(cs_st_metadata(f, "postprocessing"), expected.c_str());
    cs_st_free(f);
    cs_model_t back = nullptr;
    ASSERT_EQ(cs_model_load(ctx_, path.c_str(), &back), CS_OK) << cs_context_last_error(ctx_);
    EXPECT_EQ(cs_model_get_info(back)->postprocessing.largest_component, pp.largest_component);
    EXPECT_EQ(cs_model_get_info(back)->postprocessing.fill_holes, pp.fill_holes);
    cs_model_free(back);
    cs_model_free(m);
  }
  cs_model_info defaults;
  ASSERT_EQ(cs_model_info_init(&defaults, nullptr), CS_OK);
  EXPECT_EQ(defaults.postprocessing.largest_component, 0);
  EXPECT_EQ(defaults.postprocessing.fill_holes, 0);
}

// The recommended test-time mirroring travels with the model; files without it (older files, and
// every model that recommends none) recommend none; masks beyond the model's axes are refused.
TEST_F(ModelIo, RecommendedTestTimeMirroringRoundTripsAndIsOptional)
{
  TempDir dir;
  const std::string path = dir.File("mirror.safetensors");
  for (const int32_t axes : {0, 1, 7})
  {
    cs_model_info info = SmallInfo();
    info.test_time_mirror_axes = axes;
    cs_model_t m = Create(info);
    ASSERT_NE(m, nullptr);
    ASSERT_EQ(cs_model_save(ctx_, m, path.c_str()), CS_OK) << cs_context_last_error(ctx_);
    cs_st_file *f = nullptr;
    ASSERT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_OK);
    EXPECT_EQ(cs_st_metadata(f, "test_time_mirror_axes") != nullptr, axes != 0) << axes;
    cs_st_free(f);
    cs_model_t back = nullptr;
    ASSERT_EQ(cs_model_load(ctx_, path.c_str(), &back), CS_OK) << cs_context_last_error(ctx_);
    EXPECT_EQ(cs_model_get_info(back)->test_time_mirror_axes, axes);
    cs_model_free(back);
    cs_model_free(m);
  }
  cs_model_info info = SmallInfo();
  for (const int32_t bad : {-1, 8})
  {
    info.test_time_mirror_axes = bad;
    char msg[256];
    EXPECT_NE(cs_model_info_validate(&info, msg, sizeof msg), CS_OK) << bad;
    EXPECT_NE(std::string(msg).find("test_time_mirror_axes"), std::string::npos) << msg;
  }
  info.arch.spatial_dims = 2;
  info.test_time_mirror_axes = 4; // z, which a 2D model does not have
  char msg[256];
  EXPECT_NE(cs_model_info_validate(&info, msg, sizeof msg), CS_OK);
}

// The bundled models' recommendations, with which their cross-validated figures were measured
// (their cards): the structures model keeps the largest component of each structure, the tumour
// model no clean-up (its sub-regions come in pieces: whole tumour higher without it in 7 of 8
// folds); neither averages with the left-right mirror (structures, trained with mirroring: all 26
// 0.605 -> 0.580 with it; tumour: whole tumour 0.809 -> 0.807).
TEST_F(ModelIo, BundledModelsRecommendTheirMeasuredCleanUp)
{
  const std::tuple<const char *, int, int> models[] = {{"brain-structures-t1", 1, 0}, {"brain-tumor-flair-t1c", 0, 0}};
  for (const auto &[name, largest, mirror] : models)
  {
    const std::string path = std::string(COMBOSEG_SOURCE_DIR) + "/Resources/Models/" + name + ".safetensors";
    cs_model_t m = nullptr;
    ASSERT_EQ(cs_model_load(ctx_, path.c_str(), &m), CS_OK) << cs_context_last_error(ctx_);
    EXPECT_EQ(cs_model_get_info(m)->postprocessing.largest_component, largest) << name;
    EXPECT_EQ(cs_model_get_info(m)->postprocessing.fill_holes, 0) << name;
    EXPECT_EQ(cs_model_get_info(m)->test_time_mirror_axes, mirror) << name;
    cs_model_free(m);
  }
}

TEST_F(ModelIo, HalfPrecisionSaveIsSmallerAndClose)
{
  TempDir dir;
  cs_model_t m = Create(SmallInfo(), 5);
  std::string p32 = dir.File("m32.safetensors"), p16 = dir.File("m16.safetensors");
  ASSERT_EQ(cs_model_save(ctx_, m, p32.c_str()), CS_OK);
  ASSERT_EQ(cs_model_save_f16(ctx_, m, p16.c_str()), CS_OK) << cs_context_last_error(ctx_);
  const size_t data32 = Split(ReadBytes(p32)).data.size(), data16 = Split(ReadBytes(p16)).data.size();
  EXPECT_EQ(data16 * 2, data32);
  cs_model_t back = nullptr;
  ASSERT_EQ(cs_model_load(ctx_, p16.c_str(), &back), CS_OK) << cs_context_last_error(ctx_);
  for (int64_t i = 0; i < cs_model_num_parameters(m); ++i)
    ASSERT_NEAR(back->params[i], m->params[i], std::fabs(m->params[i]) * 1e-3f + 1e-7f);
  cs_model_free(back);
  cs_model_free(m);
}

// Trainer checkpoints are model files with more tensors and metadata: the model metadata reads
// back from them, and cs_model_load refuses them (extra tensors) rather than ignoring state.
TEST_F(ModelIo, SaveWithExtraTensorsKeepsTheModelMetadata)
{
  TempDir dir;
  cs_model_info info = SmallInfo();
  cs_model_t m = Create(info, 8);
  std::string path = dir.File("ckpt.safetensors");
  std::vector<float> state(10);
  for (size_t i = 0; i < state.size(); ++i)
    state[i] = 0.5f * static_cast<float>(i);
  const int64_t shape[1] = {10};
  cs_named_buffer extra[1] = {{"adam.m", 1, shape, state.data()}};
  cs_st_pair meta[1] = {{"step", "17"}};
  ASSERT_EQ(cs_model_save_with(ctx_, m, path.c_str(), extra, 1, meta, 1), CS_OK) << cs_context_last_error(ctx_);
  cs_st_file *f = nullptr;
  ASSERT_EQ(cs_st_read(ctx_, path.c_str(), &f), CS_OK);
  EXPECT_STREQ(cs_st_metadata(f, "step"), "17");
  cs_model_info back;
  ASSERT_EQ(cs_model_info_read(ctx_, f, path.c_str(), &back), CS_OK) << cs_context_last_error(ctx_);
  ExpectSameInfo(back, info);
  std::vector<float> got(10);
  float *dst[1] = {got.data()};
  ASSERT_EQ(cs_st_copy_tensors(ctx_, f, path.c_str(), extra, 1, 1, dst), CS_OK);
  EXPECT_EQ(got, state);
  cs_st_free(f);
  EXPECT_TRUE(Contains(LoadFails(path).c_str(), "unexpected tensor adam.m"));
  // a repeated name is refused, and nothing is written
  cs_named_buffer clash[1] = {{m->tensors[0].name, 1, shape, state.data()}};
  std::string other = dir.File("clash.safetensors");
  EXPECT_EQ(cs_model_save_with(ctx_, m, other.c_str(), clash, 1, nullptr, 0), CS_ERR_INVALID_ARGUMENT);
  EXPECT_FALSE(Exists(other));
  cs_model_free(m);
}

TEST_F(ModelIo, FailedSaveLeavesTheOldFileIntact)
{
  TempDir dir;
  std::string path = SaveSmall(dir);
  const std::string old = ReadBytes(path);
  cs_model_info info = SmallInfo();
  std::strcpy(info.name, "new-model");
  cs_model_t m = Create(info, 3);

  // the path is a directory
  std::string sub = dir.File("subdir");
  ASSERT_EQ(mkdir(sub.c_str(), 0755), 0);
  EXPECT_EQ(cs_model_save(ctx_, m, sub.c_str()), CS_ERR_IO);
  EXPECT_TRUE(Contains(cs_context_last_error(ctx_), "subdir")) << cs_context_last_error(ctx_);

  // the folder does not exist
  EXPECT_EQ(cs_model_save(ctx_, m, dir.File("no/such/folder/m.safetensors").c_str()), CS_ERR_IO);

  // the disk fills up half-way (a file size limit makes writes fail like ENOSPC)
  {
    struct rlimit saved;
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*previous)(int) = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = saved;
    small.rlim_cur = 1000;
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
    cs_status st = cs_model_save(ctx_, m, path.c_str());
    std::string msg = cs_context_last_error(ctx_);
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &saved), 0);
    std::signal(SIGXFSZ, previous);
    EXPECT_EQ(st, CS_ERR_IO);
    EXPECT_TRUE(Contains(msg.c_str(), "write failed")) << msg;
  }
  EXPECT_EQ(ReadBytes(path), old);

  // a read-only folder (not enforced for root, who may write anywhere)
  ASSERT_EQ(chmod(dir.Path().c_str(), 0555), 0);
  if (access(dir.Path().c_str(), W_OK) != 0)
  {
    EXPECT_EQ(cs_model_save(ctx_, m, path.c_str()), CS_ERR_IO);
    EXPECT_EQ(ReadBytes(path), old);
  }
  ASSERT_EQ(chmod(dir.Path().c_str(), 0755), 0);

  // no temporary files remain
  std::string cmd = "ls '" + dir.Path() + "' | grep -c tmp- > '" + dir.File("count.txt") + "'";
  (void)std::system(cmd.c_str());
  EXPECT_EQ(ReadBytes(dir.File("count.txt")), "0\n");
  cs_model_t back = nullptr;
  ASSERT_EQ(cs_model_load(ctx_, path.c_str(), &back), CS_OK);
  EXPECT_STREQ(cs_model_get_info(back)->name, "abdomen-test");
  cs_model_free(back);
  cs_model_free(m);
}

TEST_F(ModelIo, TruncatedFilesAreErrors)
{
  TempDir dir;
  std::string path = SaveSmall(dir);
  const std::string bytes = ReadBytes(path);
  std::string cut = dir.File("cut.safetensors");
  const size_t header_end = 8 + Split(bytes).header.size();
  // every length in the first bytes, then a sample through the header and the data
  for (size_t len = 0; len < bytes.size(); len += len < 64 ? 1 : len < header_end ? 13 : 37)
  {
    WriteBytes(cut, bytes.substr(0, len));
    std::string msg = LoadFails(cut);
    EXPECT_TRUE(Contains(msg.c_str(), "cut.safetensors")) << msg;
    EXPECT_TRUE(Contains(msg.c_str(), "truncated") || Contains(msg.c_str(), "header length") ||
                Contains(msg.c_str(), "data section"))
        << "length " << len << ": " << msg;
  }
}

TEST_F(ModelIo, BitFlipsNeverCrash)
{
  TempDir dir;
  std::string path = SaveSmall(dir);
  const std::string bytes = ReadBytes(path);
  const size_t header_end = 8 + Split(bytes).header.size();
  std::string flipped = dir.File("flip.safetensors");
  int errors = 0, loads = 0;
  auto attempt = [&](size_t at, int bit) {
    std::string b = bytes;
    b[at] = static_cast<char>(b[at] ^ (1 << bit));
    WriteBytes(flipped, b);
    cs_model_t m = nullptr;
    if (cs_model_load(ctx_, flipped.c_str(), &m) == CS_OK)
    {
      ++loads;
      char msg[256];
      EXPECT_EQ(cs_model_info_validate(cs_model_get_info(m), msg, sizeof msg), CS_OK) << msg;
      for (int64_t i = 0; i < cs_model_num_parameters(m); ++i)
        ASSERT_TRUE(std::isfinite(m->params[i]));
      cs_model_free(m);
    }
    else
    {
      ++errors;
      EXPECT_STRNE(cs_context_last_error(ctx_), "");
    }
  };
  for (size_t at = 0; at < header_end; at += at < 16 ? 1 : 5)
    attempt(at, static_cast<int>(at % 8));
  const int header_attempts = errors + loads;
  uint64_t state = 2024;
  for (int i = 0; i < 200; ++i)
  {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    attempt((state >> 33) % bytes.size(), static_cast<int>((state >> 20) % 8));
  }
  EXPECT_GT(errors, header_attempts / 2);
  EXPECT_GT(loads, 0); // flips inside weights or free text may leave a valid file
}

// Rewrites a saved model through the safetensors layer with one change.
class ModelFileEdits : public ModelIo
{
protected:
  void SetUp() override
  {
    ModelIo::SetUp();
    model_ = Create(SmallInfo(), 21);
    ASSERT_NE(model_, nullptr);
    path_ = dir_.File("edit.safetensors");
    for (int32_t i = 0; i < model_->num_tensors; ++i)
    {
      const cs_param_tensor &t = model_->tensors[i];
      list_.push_back({t.name, t.ndim, t.shape, model_->params + t.offset});
    }
    ASSERT_EQ(cs_model_save(ctx_, model_, path_.c_str()), CS_OK);
    cs_st_file *f = nullptr;
    ASSERT_EQ(cs_st_read(ctx_, path_.c_str(), &f), CS_OK);
    for (int32_t i = 0; i < f->num_metadata; ++i)
      meta_.push_back({f->metadata_keys[i], f->metadata_values[i]});
    cs_st_free(f);
  }
  void TearDown() override
  {
    cs_model_free(model_);
    ModelIo::TearDown();
  }
  std::string Write(const std::vector<cs_named_buffer> &list,
                    const std::vector<std::pair<std::string, std::string>> &meta)
  {
    std::vector<cs_st_pair> pairs;
    for (const auto &p : meta)
      pairs.push_back({p.first.c_str(), p.second.c_str()});
    std::string out = dir_.File("edited.safetensors");
    EXPECT_EQ(cs_st_write(ctx_, out.c_str(), list.data(), static_cast<int32_t>(list.size()), pairs.data(),
                          static_cast<int32_t>(pairs.size()), CS_ST_F32),
              CS_OK)
        << cs_context_last_error(ctx_);
    return out;
  }
  std::vector<std::pair<std::string, std::string>> MetaWith(const std::string &key, const char *value)
  {
    std::vector<std::pair<std::string, std::string>> m;
    for (const auto &p : meta_)
      if (p.first != key)
        m.push_back(p);
      else if (value)
        m.push_back({key, value});
    return m;
  }

  TempDir dir_;
  cs_model_t model_ = nullptr;
  std::string path_;
  std::vector<cs_named_buffer> list_;
  std::vector<std::pair<std::string, std::string>> meta_;
};

TEST_F(ModelFileEdits, UnchangedRewriteLoads)
{
  cs_model_t m = nullptr;
  ASSERT_EQ(cs_model_load(ctx_, Write(list_, meta_).c_str(), &m), CS_OK) << cs_context_last_error(ctx_);
  cs_model_free(m);
}

// Files written before the field existed load, recommending no clean-up; either key alone is read.
TEST_F(ModelFileEdits, PostprocessingIsOptionalPerFileAndPerKey)
{
  const std::vector<std::tuple<const char *, int32_t, int32_t>> cases = {
      {nullptr, 0, 0}, {"{}", 0, 0}, {"{\"fill_holes\":true}", 0, 1}, {"{\"largest_component\":true}", 1, 0}};
  for (const auto &c : cases)
  {
    cs_model_t m = nullptr;
    ASSERT_EQ(cs_model_load(ctx_, Write(list_, MetaWith("postprocessing", std::get<0>(c))).c_str(), &m), CS_OK)
        << cs_context_last_error(ctx_);
    EXPECT_EQ(cs_model_get_info(m)->postprocessing.largest_component, std::get<1>(c));
    EXPECT_EQ(cs_model_get_info(m)->postprocessing.fill_holes, std::get<2>(c));
    cs_model_free(m);
  }
}

TEST_F(ModelFileEdits, WrongShapeMissingAndExtraTensors)
{
  // wrong shape: the first conv weight read as if it had 3 input channels
  std::vector<float> bigger(static_cast<size_t>(model_->tensors[0].count) * 3 / 2, 0.1f);
  int64_t shape[5];
  std::memcpy(shape, model_->tensors[0].shape, sizeof shape);
  shape[1] = 3;
  auto list = list_;
  list[0].shape = shape;
  list[0].data = bigger.data();
  std::string msg = LoadFails(Write(list, meta_));
  EXPECT_TRUE(Contains(msg.c_str(), "enc0.conv1.weight has shape [2,3,3,3,3], expected [2,2,3,3,3]")) << msg;

  list = list_;
  list.erase(list.begin() + 3);
  msg = LoadFails(Write(list, meta_));
  EXPECT_TRUE(Contains(msg.c_str(), "missing")) << msg;
  EXPECT_TRUE(Contains(msg.c_str(), model_->tensors[3].name)) << msg;

  list = list_;
  float extra[2] = {1.0f, 2.0f};
  const int64_t es[1] = {2};
  list.push_back({"bonus.weight", 1, es, extra});
  msg = LoadFails(Write(list, meta_));
  EXPECT_TRUE(Contains(msg.c_str(), "unexpected tensor bonus.weight")) << msg;
}

TEST_F(ModelFileEdits, NonFiniteWeightsAreRejected)
{
  std::vector<float> w(model_->params + model_->tensors[2].offset,
                       model_->params + model_->tensors[2].offset + model_->tensors[2].count);
  w.back() = NAN;
  auto list = list_;
  list[2].data = w.data();
  std::string msg = LoadFails(Write(list, meta_));
  EXPECT_TRUE(Contains(msg.c_str(), "non-finite")) << msg;
  w.back() = -INFINITY;
  msg = LoadFails(Write(list, meta_));
  EXPECT_TRUE(Contains(msg.c_str(), "non-finite")) << msg;
}

TEST_F(ModelFileEdits, BadMetadataIsRejectedNamingTheField)
{
  const std::vector<std::tuple<std::string, const char *, std::string>> cases = {
      {"format", nullptr, "not a ComboSeg model"},
      {"format", "other", "not a ComboSeg model"},
      {"format_version", "2", "format_version"},
      {"format_version", "one", "format_version"},
      {"levels", nullptr, "'levels' is missing"},
      {"levels", "2.5", "levels"},
      {"levels", "9", "levels"},
      {"base_filters", "4", "enc0.conv1.weight has shape [2,2,3,3,3], expected [4,2,3,3,3]"},
      {"in_channels", "1", "channels"},
      {"in_channels", "99", "in_channels"},
      {"num_classes", "1000000000000", "num_classes"},
      {"spatial_dims", "2", "patch_size[2]"},
      {"leaky_slope", "abc", "leaky_slope"},
      {"leaky_slope", "0.02x", "leaky_slope"},
      {"classes", "[] []", "classes"},
      {"norm_epsilon", "nan", "norm_epsilon"},
      {"channels", "[{\"name\":\"x\"}]", "channels"},
      {"channels", "not json", "channels"},
      {"channels",
       "[{\"name\":\"a\",\"modality\":\"xray\",\"norm\":\"none\",\"clip_low\":0,"
       "\"clip_high\":0,\"mean\":0,\"std\":1},{\"name\":\"b\",\"modality\":\"ct\","
       "\"norm\":\"none\",\"clip_low\":0,\"clip_high\":0,\"mean\":0,\"std\":1}]",
       "channels"},
      {"classes", "[]", "classes"},
      {"classes",
       "[{\"value\":0,\"name\":\"bg\",\"rgb\":[0,0,0]},{\"value\":1,\"name\":\"a\","
       "\"rgb\":[0,0,300]},{\"value\":2,\"name\":\"b\",\"rgb\":[1,2,3]}]",
       "classes"},
      {"classes",
       "[{\"value\":0,\"name\":\"bg\",\"rgb\":[0,0,0]},{\"value\":1,\"name\":\"a\","
       "\"rgb\":[0,0,3]},{\"value\":1,\"name\":\"b\",\"rgb\":[1,2,3]}]",
       "classes[2].value"},
      {"spacing", "[1,2]", "spacing"},
      {"spacing", "[1,2,-3]", "spacing[2]"},
      {"orientation", "RAX", "orientation"},
      {"orientation", "RASRAS", "orientation"},
      {"patch_size", "[16,8,3]", "patch_size[2]"},
      {"patch_size", "{\"x\":1}", "patch_size"},
      {"loss", "{\"kind\":\"combo\"}", "loss"},
      {"loss",
       "{\"kind\":\"magic\",\"alpha\":0.5,\"beta\":0.5,\"gamma\":0,\"tversky_alpha\":0.3,"
       "\"tversky_beta\":0.7,\"dice_include_background\":0,\"batch_dice\":0}",
       "loss"},
      {"loss",
       "{\"kind\":\"combo\",\"alpha\":5,\"beta\":0.5,\"gamma\":0,\"tversky_alpha\":0.3,"
       "\"tversky_beta\":0.7,\"dice_include_background\":0,\"batch_dice\":0}",
       "loss.alpha"},
      {"name", nullptr, "'name' is missing"},
      {"description", nullptr, "description"},
      {"postprocessing", "not json", "postprocessing"},
      {"postprocessing", "[true]", "postprocessing"},
      {"postprocessing", "{\"largest_component\":1}", "postprocessing"},
      {"postprocessing", "{\"largest_component\":true,\"smooth\":true}", "postprocessing"},
  };
  for (const auto &c : cases)
  {
    std::string msg = LoadFails(Write(list_, MetaWith(std::get<0>(c), std::get<1>(c))));
    EXPECT_TRUE(Contains(msg.c_str(), std::get<2>(c).c_str()))
        << std::get<0>(c) << " = " << (std::get<1>(c) ? std::get<1>(c) : "(absent)") << ": message '" << msg
        << "' lacks '" << std::get<2>(c) << "'";
    EXPECT_TRUE(Contains(msg.c_str(), "edited.safetensors")) << msg;
  }
  std::string long_name(CS_NAME_MAX, 'x');
  std::string msg = LoadFails(Write(list_, MetaWith("name", long_name.c_str())));
  EXPECT_TRUE(Contains(msg.c_str(), "name")) << msg;
  EXPECT_TRUE(Contains(msg.c_str(), "longer")) << msg;
}

TEST_F(ModelFileEdits, NonStringMetadataAndWrongDtypeInTheRawHeader)
{
  const Parts parts = Split(ReadBytes(path_));
  std::string out = dir_.File("raw.safetensors");
  WriteBytes(out, Join(Replace(parts.header, "\"levels\":\"2\"", "\"levels\":2"), parts.data));
  std::string msg = LoadFails(out);
  EXPECT_TRUE(Contains(msg.c_str(), "not a string")) << msg;
  EXPECT_TRUE(Contains(msg.c_str(), "levels")) << msg;

  WriteBytes(out, Join(Replace(parts.header, "\"dtype\":\"F32\"", "\"dtype\":\"I32\""), parts.data));
  msg = LoadFails(out);
  EXPECT_TRUE(Contains(msg.c_str(), "dtype I32")) << msg;

  WriteBytes(out, Join(Replace(parts.header, "\"dtype\":\"F32\"", "\"dtype\":\"F16\""), parts.data));
  msg = LoadFails(out);
  EXPECT_TRUE(Contains(msg.c_str(), "data_offsets")) << msg;
}

} // namespace
