/*
 * Fake NVML (libnvidia-ml.so.1) for tests: implements the part of the NVML C API that
 * infermeter calls, with the C ABI of nvml.h, and serves values from the JSON file named
 * by $FAKE_NVML_CONFIG. The contract is harness/fake_nvml/SPEC.md.
 *
 * Design:
 *  - One mutex guards all state. Every API call locks it, re-reads the state file if its
 *    inode/size/mtime changed, does its work on the parsed cJSON tree and unlocks.
 *  - Device handles point into static arrays (gpus[], migs[]) that are updated in place on
 *    reload, so a handle stays valid (same pointer, same device) across reloads.
 *  - Values are looked up in the device's JSON object at call time: an absent key means
 *    NVML_ERROR_NOT_SUPPORTED.
 *  - Build with -DFAKE_NVML_OLD_DRIVER to leave out the symbols a pre-535 driver lacks.
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

/* ---- The C ABI of nvml.h (declared here from the public bindings, not copied) ---- */

typedef enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22,
    NVML_ERROR_INSUFFICIENT_RESOURCES = 23,
    NVML_ERROR_FREQ_NOT_SUPPORTED = 24,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_DEPRECATED = 26,
    NVML_ERROR_NOT_READY = 27,
    NVML_ERROR_GPU_NOT_FOUND = 28,
    NVML_ERROR_INVALID_STATE = 29,
    NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30,
    NVML_ERROR_UNKNOWN = 999
} nvmlReturn_t;

typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlEventSet_st *nvmlEventSet_t;

#define NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE 32
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE 16

typedef struct {
    char busIdLegacy[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
} nvmlPciInfo_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

/* NVML_STRUCT_VERSION(Memory, 2): sizeof(nvmlMemory_v2_t) | 2 << 24 */
#define nvmlMemory_v2 ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))
_Static_assert(nvmlMemory_v2 == 0x02000028, "nvmlMemory_v2_t layout differs from nvml.h");

typedef enum {
    NVML_VALUE_TYPE_DOUBLE = 0,
    NVML_VALUE_TYPE_UNSIGNED_INT = 1,
    NVML_VALUE_TYPE_UNSIGNED_LONG = 2,
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3,
    NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4,
    NVML_VALUE_TYPE_SIGNED_INT = 5,
    NVML_VALUE_TYPE_UNSIGNED_SHORT = 6
} nvmlValueType_t;

typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    signed long long sllVal;
    signed int siVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    nvmlValueType_t valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

typedef enum { NVML_TEMPERATURE_GPU = 0 } nvmlTemperatureSensors_t;

typedef struct {
    unsigned int version;
    nvmlTemperatureSensors_t sensorType;
    int temperature;
} nvmlTemperature_v1_t;
#define nvmlTemperature_v1 ((unsigned int)(sizeof(nvmlTemperature_v1_t) | (1U << 24U)))
typedef enum { NVML_CLOCK_GRAPHICS = 0, NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2 } nvmlClockType_t;
typedef enum { NVML_MEMORY_ERROR_TYPE_CORRECTED = 0, NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1 } nvmlMemoryErrorType_t;
typedef enum { NVML_VOLATILE_ECC = 0, NVML_AGGREGATE_ECC = 1 } nvmlEccCounterType_t;

#define NVML_FI_DEV_MEMORY_TEMP 82
#define nvmlEventTypeSingleBitEccError 0x1ULL
#define nvmlEventTypeDoubleBitEccError 0x2ULL
#define nvmlEventTypePState 0x4ULL
#define nvmlEventTypeXidCriticalError 0x8ULL
#define nvmlEventTypeClock 0x10ULL
#define SUPPORTED_EVENT_TYPES                                                                  \
    (nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError | nvmlEventTypePState |  \
     nvmlEventTypeXidCriticalError | nvmlEventTypeClock)
#define NVML_DEVICE_MIG_DISABLE 0
#define NVML_DEVICE_MIG_ENABLE 1
#define NO_INSTANCE_ID 0xFFFFFFFFu

/* ---- State ---- */

#define MAX_GPUS 64
#define MAX_MIGS 7 /* per GPU */
#define MAX_EVENT_SETS 64
#define POLL_MS 10

struct nvmlDevice_st {
    int gpu;            /* index into "devices" */
    int mig;            /* index into that device's "mig_devices", -1 for a full GPU */
    const cJSON *json;  /* this device's object in the current tree, NULL when not configured */
};

struct nvmlEventSet_st {
    int in_use;
    unsigned long long types[MAX_GPUS]; /* registered event types per GPU index */
};

enum scope { ANY_DEVICE, FULL_GPU_ONLY };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct nvmlDevice_st gpus[MAX_GPUS];
static struct nvmlDevice_st migs[MAX_GPUS][MAX_MIGS];
static struct nvmlEventSet_st event_sets[MAX_EVENT_SETS];
static unsigned int gpu_count;
static unsigned int init_refcount;
static cJSON *state;                 /* the last valid parsed state file, NULL before any */
static char config_path[PATH_MAX];

/* Identity of the state file as last seen, so it is re-read only when it changed. */
static struct {
    int seen; /* 0: never looked, 1: stat failed, 2: stat succeeded */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_id;

/* Event ids already delivered from this state file (each XID event is delivered once). */
static double *delivered;
static size_t delivered_count, delivered_cap;

/* ---- Error codes ---- */

static const struct {
    nvmlReturn_t code;
    const char *name; /* as spelled in the state file, after NVML_ERROR_ */
    const char *text; /* nvmlErrorString */
} errors[] = {
    {NVML_SUCCESS, "SUCCESS", "Success"},
    {NVML_ERROR_UNINITIALIZED, "UNINITIALIZED", "Uninitialized"},
    {NVML_ERROR_INVALID_ARGUMENT, "INVALID_ARGUMENT", "Invalid Argument"},
    {NVML_ERROR_NOT_SUPPORTED, "NOT_SUPPORTED", "Not Supported"},
    {NVML_ERROR_NO_PERMISSION, "NO_PERMISSION", "Insufficient Permissions"},
    {NVML_ERROR_ALREADY_INITIALIZED, "ALREADY_INITIALIZED", "Already Initialized"},
    {NVML_ERROR_NOT_FOUND, "NOT_FOUND", "Not Found"},
    {NVML_ERROR_INSUFFICIENT_SIZE, "INSUFFICIENT_SIZE", "Insufficient Size"},
    {NVML_ERROR_INSUFFICIENT_POWER, "INSUFFICIENT_POWER", "Insufficient External Power"},
    {NVML_ERROR_DRIVER_NOT_LOADED, "DRIVER_NOT_LOADED", "Driver Not Loaded"},
    {NVML_ERROR_TIMEOUT, "TIMEOUT", "Timeout"},
    {NVML_ERROR_IRQ_ISSUE, "IRQ_ISSUE", "Interrupt Request Issue"},
    {NVML_ERROR_LIBRARY_NOT_FOUND, "LIBRARY_NOT_FOUND", "NVML Shared Library Not Found"},
    {NVML_ERROR_FUNCTION_NOT_FOUND, "FUNCTION_NOT_FOUND", "Function Not Found"},
    {NVML_ERROR_CORRUPTED_INFOROM, "CORRUPTED_INFOROM", "Corrupted infoROM"},
    {NVML_ERROR_GPU_IS_LOST, "GPU_IS_LOST", "GPU is lost"},
    {NVML_ERROR_RESET_REQUIRED, "RESET_REQUIRED", "GPU requires restart"},
    {NVML_ERROR_OPERATING_SYSTEM, "OPERATING_SYSTEM", "The operating system has blocked the request."},
    {NVML_ERROR_LIB_RM_VERSION_MISMATCH, "LIB_RM_VERSION_MISMATCH", "RM has detected an NVML/RM version mismatch."},
    {NVML_ERROR_IN_USE, "IN_USE", "In use by another client"},
    {NVML_ERROR_MEMORY, "MEMORY", "Insufficient Memory"},
    {NVML_ERROR_NO_DATA, "NO_DATA", "No data"},
    {NVML_ERROR_VGPU_ECC_NOT_SUPPORTED, "VGPU_ECC_NOT_SUPPORTED", "ECC is not supported on vGPU"},
    {NVML_ERROR_INSUFFICIENT_RESOURCES, "INSUFFICIENT_RESOURCES", "Insufficient resources"},
    {NVML_ERROR_FREQ_NOT_SUPPORTED, "FREQ_NOT_SUPPORTED", "Frequency not supported"},
    {NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "ARGUMENT_VERSION_MISMATCH", "Argument version mismatch"},
    {NVML_ERROR_DEPRECATED, "DEPRECATED", "Deprecated"},
    {NVML_ERROR_NOT_READY, "NOT_READY", "Not ready"},
    {NVML_ERROR_GPU_NOT_FOUND, "GPU_NOT_FOUND", "GPU not found"},
    {NVML_ERROR_INVALID_STATE, "INVALID_STATE", "Invalid state"},
    {NVML_ERROR_RESET_TYPE_NOT_SUPPORTED, "RESET_TYPE_NOT_SUPPORTED", "Reset type not supported"},
    {NVML_ERROR_UNKNOWN, "UNKNOWN", "Unknown Error"},
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Error code named by a JSON string ("GPU_IS_LOST" or "NVML_ERROR_GPU_IS_LOST"); absent or
 * null means success, an unknown name means NVML_ERROR_UNKNOWN. */
static nvmlReturn_t error_named(const cJSON *item)
{
    const char *name;
    size_t i;

    if (!cJSON_IsString(item))
        return NVML_SUCCESS;
    name = item->valuestring;
    if (strncmp(name, "NVML_ERROR_", 11) == 0)
        name += 11;
    for (i = 0; i < COUNT_OF(errors); i++)
        if (strcasecmp(name, errors[i].name) == 0)
            return errors[i].code;
    return NVML_ERROR_UNKNOWN;
}

/* ---- State file ---- */

static const cJSON *item(const cJSON *object, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(object, key);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t len = 0, cap = 0, n;

    if (f == NULL)
        return NULL;
    do {
        if (cap - len < 4096) {
            char *grown = realloc(text, cap + 65536);
            if (grown == NULL) {
                free(text);
                fclose(f);
                return NULL;
            }
            text = grown;
            cap += 65536;
        }
        n = fread(text + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    text[len] = '\0';
    fclose(f);
    return text;
}

/* Points the static device slots at the objects of the new tree (handles keep their address). */
static void bind_devices(const cJSON *root)
{
    const cJSON *devices = item(root, "devices");
    unsigned int g, m;

    gpu_count = 0;
    for (g = 0; g < MAX_GPUS; g++) {
        gpus[g].gpu = (int)g;
        gpus[g].mig = -1;
        const cJSON *gpu = cJSON_IsArray(devices) ? cJSON_GetArrayItem(devices, (int)g) : NULL;
        const cJSON *mig_list = item(gpu, "mig_devices");

        gpus[g].json = cJSON_IsObject(gpu) ? gpu : NULL;
        if (gpus[g].json != NULL)
            gpu_count = g + 1;
        for (m = 0; m < MAX_MIGS; m++) {
            const cJSON *mig = cJSON_IsArray(mig_list) && gpus[g].json != NULL
                                   ? cJSON_GetArrayItem(mig_list, (int)m)
                                   : NULL;
            migs[g][m].gpu = (int)g;
            migs[g][m].mig = (int)m;
            migs[g][m].json = cJSON_IsObject(mig) ? mig : NULL;
        }
    }
    if (cJSON_GetArraySize(devices) > MAX_GPUS)
        fprintf(stderr, "fake_nvml: only the first %d devices are used\n", MAX_GPUS);
}

/* Re-reads the state file if its inode, size or mtime changed; keeps the old state on error. */
static void reload_if_changed(void)
{
    struct stat st;
    char *text;
    cJSON *root;

    if (stat(config_path, &st) != 0) {
        if (file_id.seen != 1)
            fprintf(stderr, "fake_nvml: cannot stat %s: %s; keeping the previous state\n",
                    config_path, strerror(errno));
        file_id.seen = 1;
        return;
    }
    if (file_id.seen == 2 && file_id.dev == st.st_dev && file_id.ino == st.st_ino &&
        file_id.size == st.st_size && file_id.mtime.tv_sec == st.st_mtim.tv_sec &&
        file_id.mtime.tv_nsec == st.st_mtim.tv_nsec)
        return;
    file_id.seen = 2;
    file_id.dev = st.st_dev;
    file_id.ino = st.st_ino;
    file_id.size = st.st_size;
    file_id.mtime = st.st_mtim;

    text = read_file(config_path);
    root = text != NULL ? cJSON_Parse(text) : NULL;
    free(text);
    if (!cJSON_IsObject(root)) {
        fprintf(stderr, "fake_nvml: %s is unreadable or not a JSON object; keeping the previous state\n",
                config_path);
        cJSON_Delete(root);
        return;
    }
    bind_devices(root);
    cJSON_Delete(state);
    state = root;
}

/* ---- Locking, handle validation and value lookup ---- */

/* Locks the state and refreshes it; every API call but nvmlErrorString starts here. */
static nvmlReturn_t enter(void)
{
    pthread_mutex_lock(&lock);
    if (init_refcount == 0)
        return NVML_ERROR_UNINITIALIZED;
    reload_if_changed();
    return NVML_SUCCESS;
}

static nvmlReturn_t leave(nvmlReturn_t ret)
{
    pthread_mutex_unlock(&lock);
    return ret;
}

static int is_gpu_handle(const struct nvmlDevice_st *d)
{
    uintptr_t p = (uintptr_t)d, base = (uintptr_t)gpus;
    return p >= base && p < base + sizeof(gpus) && (p - base) % sizeof(gpus[0]) == 0;
}

static int is_mig_handle(const struct nvmlDevice_st *d)
{
    uintptr_t p = (uintptr_t)d, base = (uintptr_t)migs;
    return p >= base && p < base + sizeof(migs) && (p - base) % sizeof(migs[0][0]) == 0;
}

static int is_mig(nvmlDevice_t device)
{
    return device->mig >= 0;
}

/* The error every call on this device returns: its own fault, or its parent GPU's. */
static nvmlReturn_t device_fault(nvmlDevice_t device)
{
    nvmlReturn_t ret = error_named(item(gpus[device->gpu].json, "fault"));
    if (ret == NVML_SUCCESS && is_mig(device))
        ret = error_named(item(device->json, "fault"));
    return ret;
}

/* Locks, then checks what every device call checks, in NVML's order: initialised, a handle
 * of ours that is configured, an output pointer, the device's fault, MIG support. */
static nvmlReturn_t enter_device(nvmlDevice_t device, enum scope scope, const void *out)
{
    nvmlReturn_t ret = enter();

    if (ret != NVML_SUCCESS)
        return ret;
    if (!(is_gpu_handle(device) || is_mig_handle(device)) || device->json == NULL || out == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    ret = device_fault(device);
    if (ret == NVML_SUCCESS && scope == FULL_GPU_ONLY && is_mig(device))
        ret = NVML_ERROR_NOT_SUPPORTED;
    return ret;
}

/* A non-negative number under key in object; NOT_SUPPORTED when absent or not a number. */
static nvmlReturn_t number_at(const cJSON *object, const char *key, unsigned long long *out)
{
    const cJSON *value = item(object, key);

    if (!cJSON_IsNumber(value))
        return NVML_ERROR_NOT_SUPPORTED;
    *out = value->valuedouble > 0 ? (unsigned long long)value->valuedouble : 0;
    return NVML_SUCCESS;
}

/* Copies the string under key into a caller buffer of length bytes. */
static nvmlReturn_t string_at(const cJSON *object, const char *key, char *buf, unsigned int length)
{
    const cJSON *value = item(object, key);

    if (!cJSON_IsString(value))
        return NVML_ERROR_NOT_SUPPORTED;
    if (strlen(value->valuestring) >= length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(buf, value->valuestring);
    return NVML_SUCCESS;
}

/* The common shape "one numeric key of a device into an unsigned int / long long". */
static nvmlReturn_t device_uint(nvmlDevice_t device, enum scope scope, const char *key,
                                unsigned int *out)
{
    unsigned long long value = 0;
    nvmlReturn_t ret = enter_device(device, scope, out);

    if (ret == NVML_SUCCESS)
        ret = number_at(device->json, key, &value);
    if (ret == NVML_SUCCESS)
        *out = (unsigned int)value;
    return leave(ret);
}

static nvmlReturn_t device_ull(nvmlDevice_t device, const char *key, unsigned long long *out)
{
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, out);

    if (ret == NVML_SUCCESS)
        ret = number_at(device->json, key, out);
    return leave(ret);
}

static nvmlReturn_t device_string(nvmlDevice_t device, const char *key, char *buf, unsigned int length)
{
    nvmlReturn_t ret = enter_device(device, ANY_DEVICE, buf);

    if (ret == NVML_SUCCESS)
        ret = string_at(device->json, key, buf, length);
    return leave(ret);
}

static nvmlReturn_t system_string(const char *key, char *buf, unsigned int length)
{
    nvmlReturn_t ret = enter();

    if (ret == NVML_SUCCESS && buf == NULL)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS)
        ret = string_at(state, key, buf, length);
    return leave(ret);
}

/* For a call whose own arguments are invalid: the device checks still come first. */
static nvmlReturn_t invalid_argument(nvmlDevice_t device, const void *out)
{
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, out);
    return leave(ret == NVML_SUCCESS ? NVML_ERROR_INVALID_ARGUMENT : ret);
}

/* The four memory keys of a device; each is NOT_SUPPORTED when absent. */
static nvmlReturn_t memory_values(nvmlDevice_t device, unsigned long long *total, unsigned long long *reserved,
                                  unsigned long long *free_, unsigned long long *used)
{
    nvmlReturn_t ret = number_at(device->json, "memory_total", total);

    if (ret == NVML_SUCCESS && reserved != NULL)
        ret = number_at(device->json, "memory_reserved", reserved);
    if (ret == NVML_SUCCESS)
        ret = number_at(device->json, "memory_free", free_);
    if (ret == NVML_SUCCESS)
        ret = number_at(device->json, "memory_used", used);
    return ret;
}

/* ---- Initialisation and system queries ---- */

nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    const char *path = getenv("FAKE_NVML_CONFIG");
    nvmlReturn_t ret;

    (void)flags;
    pthread_mutex_lock(&lock);
    if (path == NULL || *path == '\0' || strlen(path) >= sizeof(config_path))
        return leave(NVML_ERROR_DRIVER_NOT_LOADED);
    if (strcmp(path, config_path) != 0) {
        /* Another state file (a test process running one in-process sidecar after another):
         * its events are new, even under ids an earlier file used. */
        strcpy(config_path, path);
        file_id.seen = 0;
        delivered_count = 0;
    }
    reload_if_changed();
    if (state == NULL)
        return leave(NVML_ERROR_DRIVER_NOT_LOADED);
    ret = error_named(item(state, "init_error"));
    if (ret == NVML_SUCCESS)
        init_refcount++;
    return leave(ret);
}

nvmlReturn_t nvmlInit_v2(void)
{
    return nvmlInitWithFlags(0);
}

nvmlReturn_t nvmlInit(void)
{
    return nvmlInitWithFlags(0);
}

nvmlReturn_t nvmlShutdown(void)
{
    nvmlReturn_t ret = enter();

    if (ret == NVML_SUCCESS)
        init_refcount--;
    return leave(ret);
}

const char *nvmlErrorString(nvmlReturn_t result)
{
    size_t i;

    for (i = 0; i < COUNT_OF(errors); i++)
        if (errors[i].code == result)
            return errors[i].text;
    return "Unknown Error";
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    return system_string("driver_version", version, length);
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    return system_string("nvml_version", version, length);
}

/* ---- Device enumeration and identity ---- */

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    nvmlReturn_t ret = enter();

    if (ret == NVML_SUCCESS && count == NULL)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS)
        *count = gpu_count;
    return leave(ret);
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    nvmlReturn_t ret = enter();

    if (ret == NVML_SUCCESS && (index >= gpu_count || device == NULL))
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS)
        ret = device_fault(&gpus[index]);
    if (ret == NVML_SUCCESS)
        *device = &gpus[index];
    return leave(ret);
}

static int uuid_is(nvmlDevice_t device, const char *uuid)
{
    const cJSON *value = item(device->json, "uuid");
    return cJSON_IsString(value) && strcmp(value->valuestring, uuid) == 0;
}

/* Finds a full GPU or a MIG device by UUID (real NVML accepts MIG UUIDs too). */
static nvmlDevice_t find_by_uuid(const char *uuid)
{
    unsigned int g, m;

    for (g = 0; g < gpu_count; g++) {
        if (uuid_is(&gpus[g], uuid))
            return &gpus[g];
        for (m = 0; m < MAX_MIGS; m++)
            if (uuid_is(&migs[g][m], uuid))
                return &migs[g][m];
    }
    return NULL;
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    nvmlReturn_t ret = enter();
    nvmlDevice_t found = NULL;

    if (ret == NVML_SUCCESS && (uuid == NULL || device == NULL))
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS && (found = find_by_uuid(uuid)) == NULL)
        ret = NVML_ERROR_NOT_FOUND;
    if (ret == NVML_SUCCESS)
        ret = device_fault(found);
    if (ret == NVML_SUCCESS)
        *device = found;
    return leave(ret);
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, index);

    if (ret == NVML_SUCCESS)
        *index = (unsigned int)device->gpu;
    return leave(ret);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    return device_string(device, "uuid", uuid, length);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    return device_string(device, "name", name, length);
}

/* busId is pci_bus_id as configured; busIdLegacy is the short "%04X:%02X:%02X.%X" form that
 * fits its 16 bytes; domain/bus/device are parsed from pci_bus_id. */
nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    char bus_id[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    unsigned int domain, bus, dev, function;
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, pci);

    if (ret == NVML_SUCCESS)
        ret = string_at(device->json, "pci_bus_id", bus_id, sizeof(bus_id));
    if (ret == NVML_SUCCESS &&
        sscanf(bus_id, "%x:%x:%x.%x", &domain, &bus, &dev, &function) != 4)
        ret = NVML_ERROR_UNKNOWN;
    if (ret == NVML_SUCCESS) {
        memset(pci, 0, sizeof(*pci));
        strcpy(pci->busId, bus_id);
        snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "%04X:%02X:%02X.%X", domain & 0xFFFF,
                 bus & 0xFF, dev & 0xFF, function & 0xF);
        pci->domain = domain;
        pci->bus = bus;
        pci->device = dev;
    }
    return leave(ret);
}

/* ---- Metrics ---- */

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization)
{
    unsigned long long gpu = 0, memory = 0;
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, utilization);

    if (ret == NVML_SUCCESS)
        ret = number_at(device->json, "utilization_gpu", &gpu);
    if (ret == NVML_SUCCESS)
        ret = number_at(device->json, "utilization_memory", &memory);
    if (ret == NVML_SUCCESS) {
        utilization->gpu = (unsigned int)gpu;
        utilization->memory = (unsigned int)memory;
    }
    return leave(ret);
}

/* v1 reports reserved memory as used, as real NVML does. */
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    unsigned long long total = 0, reserved = 0, free_ = 0, used = 0;
    nvmlReturn_t ret = enter_device(device, ANY_DEVICE, memory);

    if (ret == NVML_SUCCESS)
        ret = memory_values(device, &total, NULL, &free_, &used);
    if (ret == NVML_SUCCESS) {
        if (number_at(device->json, "memory_reserved", &reserved) != NVML_SUCCESS)
            reserved = 0;
        memory->total = total;
        memory->free = free_;
        memory->used = used + reserved;
    }
    return leave(ret);
}

#ifndef FAKE_NVML_OLD_DRIVER
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    unsigned long long total = 0, reserved = 0, free_ = 0, used = 0;
    nvmlReturn_t ret = enter_device(device, ANY_DEVICE, memory);

    if (ret == NVML_SUCCESS && memory->version != nvmlMemory_v2)
        ret = NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (ret == NVML_SUCCESS)
        ret = memory_values(device, &total, &reserved, &free_, &used);
    if (ret == NVML_SUCCESS) {
        memory->total = total;
        memory->reserved = reserved;
        memory->free = free_;
        memory->used = used;
    }
    return leave(ret);
}
#endif

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensor,
                                      unsigned int *temp)
{
    if (sensor != NVML_TEMPERATURE_GPU)
        return invalid_argument(device, temp);
    return device_uint(device, FULL_GPU_ONLY, "temperature_gpu", temp);
}

#ifndef FAKE_NVML_OLD_DRIVER
/* The versioned temperature call of r535+ drivers; same value as the legacy call. */
nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_v1_t *temperature)
{
    unsigned int value = 0;
    nvmlReturn_t ret;

    if (temperature == NULL)
        return invalid_argument(device, temperature);
    if (temperature->version != nvmlTemperature_v1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (temperature->sensorType != NVML_TEMPERATURE_GPU)
        return invalid_argument(device, temperature);
    ret = device_uint(device, FULL_GPU_ONLY, "temperature_gpu", &value);
    if (ret == NVML_SUCCESS)
        temperature->temperature = (int)value;
    return ret;
}
#endif

static long long now_usec(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* Per-field results; only NVML_FI_DEV_MEMORY_TEMP (from temperature_memory) is supported. */
nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount, nvmlFieldValue_t *values)
{
    unsigned long long value = 0;
    int i;
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, values);

    if (ret == NVML_SUCCESS && valuesCount < 0)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; ret == NVML_SUCCESS && i < valuesCount; i++) {
        nvmlFieldValue_t *field = &values[i];

        field->timestamp = now_usec();
        field->latencyUsec = 0;
        field->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        memset(&field->value, 0, sizeof(field->value));
        field->nvmlReturn = field->fieldId == NVML_FI_DEV_MEMORY_TEMP
                                ? number_at(device->json, "temperature_memory", &value)
                                : NVML_ERROR_NOT_SUPPORTED;
        if (field->nvmlReturn == NVML_SUCCESS)
            field->value.uiVal = (unsigned int)value;
    }
    return leave(ret);
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power)
{
    return device_uint(device, FULL_GPU_ONLY, "power_usage_mw", power);
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit)
{
    return device_uint(device, FULL_GPU_ONLY, "power_limit_mw", limit);
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy)
{
    return device_ull(device, "energy_mj", energy);
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock)
{
    static const char *const keys[] = {
        [NVML_CLOCK_GRAPHICS] = "clock_graphics_mhz",
        [NVML_CLOCK_SM] = "clock_sm_mhz",
        [NVML_CLOCK_MEM] = "clock_mem_mhz",
    };
    /* An unknown clock type reads a key no device has, hence NOT_SUPPORTED. */
    const char *key = (unsigned int)type < COUNT_OF(keys) ? keys[type] : "";

    return device_uint(device, FULL_GPU_ONLY, key, clock);
}

#ifndef FAKE_NVML_OLD_DRIVER
nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device, unsigned long long *reasons)
{
    return device_ull(device, "clocks_event_reasons", reasons);
}
#endif

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device, unsigned long long *reasons)
{
    return device_ull(device, "clocks_event_reasons", reasons);
}

nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed)
{
    return device_uint(device, FULL_GPU_ONLY, "fan_speed", speed);
}

nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t device, unsigned int *value)
{
    return device_uint(device, FULL_GPU_ONLY, "pcie_replay", value);
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, nvmlMemoryErrorType_t errorType,
                                         nvmlEccCounterType_t counterType, unsigned long long *eccCounts)
{
    static const char *const keys[2][2] = {
        [NVML_MEMORY_ERROR_TYPE_CORRECTED] = {[NVML_VOLATILE_ECC] = "ecc_corrected_volatile",
                                              [NVML_AGGREGATE_ECC] = "ecc_corrected_aggregate"},
        [NVML_MEMORY_ERROR_TYPE_UNCORRECTED] = {[NVML_VOLATILE_ECC] = "ecc_uncorrected_volatile",
                                                [NVML_AGGREGATE_ECC] = "ecc_uncorrected_aggregate"},
    };

    if ((unsigned int)errorType > 1 || (unsigned int)counterType > 1)
        return invalid_argument(device, eccCounts);
    return device_ull(device, keys[errorType][counterType], eccCounts);
}

nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrRows, unsigned int *uncRows,
                                       unsigned int *isPending, unsigned int *failureOccurred)
{
    static const char *const keys[] = {"correctable", "uncorrectable", "pending", "failure"};
    unsigned int *const outs[] = {corrRows, uncRows, isPending, failureOccurred};
    unsigned long long values[COUNT_OF(keys)];
    const cJSON *rows;
    size_t i;
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, corrRows);

    for (i = 0; ret == NVML_SUCCESS && i < COUNT_OF(outs); i++)
        if (outs[i] == NULL)
            ret = NVML_ERROR_INVALID_ARGUMENT;
    rows = ret == NVML_SUCCESS ? item(device->json, "remapped_rows") : NULL;
    for (i = 0; ret == NVML_SUCCESS && i < COUNT_OF(keys); i++)
        ret = number_at(rows, keys[i], &values[i]);
    for (i = 0; ret == NVML_SUCCESS && i < COUNT_OF(outs); i++)
        *outs[i] = (unsigned int)values[i];
    return leave(ret);
}

/* ---- MIG ---- */

static unsigned int mig_count(unsigned int gpu)
{
    unsigned int m = 0;
    while (m < MAX_MIGS && migs[gpu][m].json != NULL)
        m++;
    return m;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode)
{
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, currentMode);

    if (ret == NVML_SUCCESS && pendingMode == NULL)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS) {
        *currentMode = mig_count((unsigned int)device->gpu) > 0 ? NVML_DEVICE_MIG_ENABLE
                                                                 : NVML_DEVICE_MIG_DISABLE;
        *pendingMode = *currentMode;
    }
    return leave(ret);
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count)
{
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, count);

    if (ret == NVML_SUCCESS)
        *count = MAX_MIGS;
    return leave(ret);
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                 nvmlDevice_t *migDevice)
{
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, migDevice);

    if (ret == NVML_SUCCESS && index >= mig_count((unsigned int)device->gpu))
        ret = NVML_ERROR_NOT_FOUND;
    if (ret == NVML_SUCCESS)
        ret = device_fault(&migs[device->gpu][index]);
    if (ret == NVML_SUCCESS)
        *migDevice = &migs[device->gpu][index];
    return leave(ret);
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice)
{
    nvmlReturn_t ret = enter_device(device, ANY_DEVICE, isMigDevice);

    if (ret == NVML_SUCCESS)
        *isMigDevice = is_mig(device) ? 1 : 0;
    return leave(ret);
}

nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice, nvmlDevice_t *device)
{
    nvmlReturn_t ret = enter_device(migDevice, ANY_DEVICE, device);

    if (ret == NVML_SUCCESS && !is_mig(migDevice))
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS)
        *device = &gpus[migDevice->gpu];
    return leave(ret);
}

/* Instance ids exist only on MIG devices: NOT_SUPPORTED on a full GPU. */
static nvmlReturn_t mig_instance_id(nvmlDevice_t device, const char *key, unsigned int *id)
{
    unsigned long long value = 0;
    nvmlReturn_t ret = enter_device(device, ANY_DEVICE, id);

    if (ret == NVML_SUCCESS && !is_mig(device))
        ret = NVML_ERROR_NOT_SUPPORTED;
    if (ret == NVML_SUCCESS)
        ret = number_at(device->json, key, &value);
    if (ret == NVML_SUCCESS)
        *id = (unsigned int)value;
    return leave(ret);
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id)
{
    return mig_instance_id(device, "gpu_instance_id", id);
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id)
{
    return mig_instance_id(device, "compute_instance_id", id);
}

/* ---- Events ---- */

static int is_event_set(const struct nvmlEventSet_st *set)
{
    uintptr_t p = (uintptr_t)set, base = (uintptr_t)event_sets;
    return p >= base && p < base + sizeof(event_sets) && (p - base) % sizeof(event_sets[0]) == 0 &&
           set->in_use;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set)
{
    size_t i;
    nvmlReturn_t ret = enter();

    if (ret == NVML_SUCCESS && set == NULL)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; ret == NVML_SUCCESS && i < MAX_EVENT_SETS && event_sets[i].in_use; i++)
        ;
    if (ret == NVML_SUCCESS && i == MAX_EVENT_SETS)
        ret = NVML_ERROR_MEMORY;
    if (ret == NVML_SUCCESS) {
        memset(&event_sets[i], 0, sizeof(event_sets[i]));
        event_sets[i].in_use = 1;
        *set = &event_sets[i];
    }
    return leave(ret);
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set)
{
    nvmlReturn_t ret = enter();

    if (ret == NVML_SUCCESS && !is_event_set(set))
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS)
        set->in_use = 0;
    return leave(ret);
}

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *eventTypes)
{
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, eventTypes);

    if (ret == NVML_SUCCESS)
        *eventTypes = SUPPORTED_EVENT_TYPES;
    return leave(ret);
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes, nvmlEventSet_t set)
{
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, set);

    if (ret == NVML_SUCCESS && !is_event_set(set))
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS && (eventTypes & ~SUPPORTED_EVENT_TYPES) != 0)
        ret = NVML_ERROR_NOT_SUPPORTED;
    if (ret == NVML_SUCCESS)
        set->types[device->gpu] |= eventTypes;
    return leave(ret);
}

static int was_delivered(double id)
{
    size_t i;
    for (i = 0; i < delivered_count; i++)
        if (delivered[i] == id)
            return 1;
    return 0;
}

static int mark_delivered(double id)
{
    if (delivered_count == delivered_cap) {
        size_t cap = delivered_cap ? delivered_cap * 2 : 64;
        double *grown = realloc(delivered, cap * sizeof(*grown));
        if (grown == NULL)
            return 0;
        delivered = grown;
        delivered_cap = cap;
    }
    delivered[delivered_count++] = id;
    return 1;
}

/* The undelivered XID event with the lowest id on a GPU this set listens to, or NULL. */
static const cJSON *next_event(const struct nvmlEventSet_st *set)
{
    const cJSON *event, *best = NULL;

    cJSON_ArrayForEach(event, item(state, "xid_events"))
    {
        const cJSON *id = item(event, "id"), *gpu = item(event, "device"), *xid = item(event, "xid");

        if (!cJSON_IsNumber(id) || !cJSON_IsNumber(gpu) || !cJSON_IsNumber(xid))
            continue;
        if (gpu->valueint < 0 || (unsigned int)gpu->valueint >= gpu_count ||
            !(set->types[gpu->valueint] & nvmlEventTypeXidCriticalError))
            continue;
        if (was_delivered(id->valuedouble))
            continue;
        if (best == NULL || id->valuedouble < item(best, "id")->valuedouble)
            best = event;
    }
    return best;
}

/* Takes the next event for this set if there is one; called with the lock held. */
static int take_event(const struct nvmlEventSet_st *set, nvmlEventData_t *data)
{
    const cJSON *event = next_event(set);

    if (event == NULL || !mark_delivered(item(event, "id")->valuedouble))
        return 0;
    data->device = &gpus[item(event, "device")->valueint];
    data->eventType = nvmlEventTypeXidCriticalError;
    data->eventData = (unsigned long long)item(event, "xid")->valuedouble;
    data->gpuInstanceId = NO_INSTANCE_ID;
    data->computeInstanceId = NO_INSTANCE_ID;
    return 1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Polls the state file every POLL_MS until an event arrives or timeoutms passes; the lock is
 * released while sleeping so other threads keep working. */
nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms)
{
    long long deadline = now_ms() + timeoutms;

    for (;;) {
        long long left;
        nvmlReturn_t ret = enter();

        if (ret == NVML_SUCCESS && (!is_event_set(set) || data == NULL))
            ret = NVML_ERROR_INVALID_ARGUMENT;
        if (ret == NVML_SUCCESS && take_event(set, data))
            return leave(NVML_SUCCESS);
        leave(ret);
        if (ret != NVML_SUCCESS)
            return ret;
        left = deadline - now_ms();
        if (left <= 0)
            return NVML_ERROR_TIMEOUT;
        sleep_ms(left < POLL_MS ? left : POLL_MS);
    }
}

/* ---- GPM (GPU performance monitoring, Hopper and later) ----
 * A device supports GPM when it has "gpm_graphics_util" or "gpm_tensor_util" (percent). A
 * sample remembers its device and when it was taken; nvmlGpmMetricsGet between two samples
 * of one device, the second later, reports the configured percentages (the fake's GPU runs
 * at a constant rate between samples): metric 1 (graphics util) and 5 (any tensor util);
 * any other metric id NOT_SUPPORTED in its own nvmlReturn. */

#define NVML_GPM_METRIC_GRAPHICS_UTIL 1
#define NVML_GPM_METRIC_ANY_TENSOR_UTIL 5
#define GPM_SAMPLE_MAGIC 0x47504d53u

struct nvmlGpmSample_st {
    unsigned int magic;
    nvmlDevice_t device;
    long long taken_usec;
};
typedef struct nvmlGpmSample_st *nvmlGpmSample_t;

typedef struct {
    char *shortName;
    char *longName;
    char *unit;
} nvmlGpmMetricInfo_t;

typedef struct {
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    nvmlGpmMetricInfo_t metricInfo;
} nvmlGpmMetric_t;

typedef struct {
    unsigned int version;
    unsigned int numMetrics;
    nvmlGpmSample_t sample1;
    nvmlGpmSample_t sample2;
    nvmlGpmMetric_t metrics[];
} nvmlGpmMetricsGet_t;

typedef struct {
    unsigned int version;
    unsigned int isSupportedDevice;
} nvmlGpmSupport_t;

static int gpm_supported(nvmlDevice_t device)
{
    return cJSON_IsNumber(item(device->json, "gpm_graphics_util")) ||
           cJSON_IsNumber(item(device->json, "gpm_tensor_util"));
}

nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t device, nvmlGpmSupport_t *support)
{
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, support);

    if (ret == NVML_SUCCESS && support->version != 1)
        ret = NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (ret == NVML_SUCCESS)
        support->isSupportedDevice = gpm_supported(device) ? 1 : 0;
    return leave(ret);
}

nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *sample)
{
    if (sample == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *sample = calloc(1, sizeof(**sample));
    if (*sample == NULL)
        return NVML_ERROR_UNKNOWN;
    (*sample)->magic = GPM_SAMPLE_MAGIC;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t sample)
{
    if (sample == NULL || sample->magic != GPM_SAMPLE_MAGIC)
        return NVML_ERROR_INVALID_ARGUMENT;
    sample->magic = 0;
    free(sample);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t device, nvmlGpmSample_t sample)
{
    nvmlReturn_t ret = enter_device(device, FULL_GPU_ONLY, sample);

    if (ret == NVML_SUCCESS && sample->magic != GPM_SAMPLE_MAGIC)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS && !gpm_supported(device))
        ret = NVML_ERROR_NOT_SUPPORTED;
    if (ret == NVML_SUCCESS) {
        sample->device = device;
        sample->taken_usec = now_usec();
    }
    return leave(ret);
}

nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *get)
{
    static char graphics[] = "gr_util", tensor[] = "any_tensor_util", percent[] = "%";
    unsigned int i;
    nvmlReturn_t ret;

    if (get == NULL || get->sample1 == NULL || get->sample2 == NULL ||
        get->sample1->magic != GPM_SAMPLE_MAGIC || get->sample2->magic != GPM_SAMPLE_MAGIC)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (get->version != 1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (get->sample1->device == NULL || get->sample1->device != get->sample2->device ||
        get->sample2->taken_usec <= get->sample1->taken_usec)
        return NVML_ERROR_INVALID_ARGUMENT;
    ret = enter_device(get->sample1->device, FULL_GPU_ONLY, get);
    for (i = 0; ret == NVML_SUCCESS && i < get->numMetrics; i++) {
        nvmlGpmMetric_t *metric = &get->metrics[i];
        const char *key = metric->metricId == NVML_GPM_METRIC_GRAPHICS_UTIL     ? "gpm_graphics_util"
                          : metric->metricId == NVML_GPM_METRIC_ANY_TENSOR_UTIL ? "gpm_tensor_util"
                                                                                : "";
        const cJSON *value = item(get->sample1->device->json, key);

        metric->value = 0;
        metric->nvmlReturn = cJSON_IsNumber(value) ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
        if (metric->nvmlReturn == NVML_SUCCESS)
            metric->value = value->valuedouble;
        metric->metricInfo.shortName = metric->metricId == NVML_GPM_METRIC_GRAPHICS_UTIL ? graphics : tensor;
        metric->metricInfo.longName = metric->metricInfo.shortName;
        metric->metricInfo.unit = percent;
    }
    return leave(ret);
}
