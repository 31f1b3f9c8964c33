/*
 * itkComboSegFiles.h - the C++ layers' one way to replace a file atomically, and the small text
 * helpers they share (the C engine has its own in model_io.c).
 *
 * The temporary naming rule, the same as the engine's: whatever becomes `path` is first written
 * to "<path>.tmp-<pid>" (a file, or a folder for writers that make several files), optionally
 * followed by ".<anything>" (a writer that picks its format from the name). A later writer of the
 * same path removes such temporaries whose process no longer runs (cs_remove_stale_temporaries),
 * so a kill leaves nothing behind for long.
 *
 * Includes no ITK header: the CLI layer's argument code uses it and must stay quick to load.
 * It is also the ITK and CLI layers' one place for operating-system calls (stat, mkdir, access,
 * fsync, readlink), so that nothing else includes POSIX headers.
 * Errors throw itk::ExceptionObject (a std::exception) whose description names the file.
 */
#ifndef itkComboSegFiles_h
#define itkComboSegFiles_h

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace itk
{

/** "<path>.tmp-<pid>" followed by `suffix` (e.g. ".png"). */
std::string
ComboSegTemporaryPath(const std::string & path, const std::string & suffix = "");

/** Renames `tmp` over `path` (on failure removes `tmp` and throws), then removes the stale
 * temporaries of `path`. */
void
ComboSegCommitFile(const std::string & tmp, const std::string & path);

/** Writes `text` to a temporary, flushes it to disk and commits it to `path`. */
void
ComboSegWriteFileAtomically(const std::string & path, const std::string & text);

/** Creates the temporary folder "<path>.tmp-<pid>" and returns its name. */
std::string
ComboSegMakeTemporaryFolder(const std::string & path);

/** Removes the temporaries of `path` whose process no longer runs (the engine's
 * cs_remove_stale_temporaries; ComboSegCommitFile calls it). */
void
ComboSegRemoveStaleTemporaries(const std::string & path);

/** Removes a file, or a folder with everything in it; missing paths are fine. */
void
ComboSegRemoveTree(const std::string & path);

/** The names in a folder, "." and ".." aside, sorted; empty when it cannot be read. */
std::vector<std::string>
ComboSegFolderEntries(const std::string & folder);
/** The same into `names`; false when the folder cannot be opened. */
bool
ComboSegListFolder(const std::string & folder, std::vector<std::string> & names);

bool
ComboSegFileExists(const std::string & path);
bool
ComboSegIsFolder(const std::string & path);

/** Creates a folder (mode 0775 on POSIX); true when it was made or already existed, otherwise
 * false with errno set. */
bool
ComboSegMakeFolder(const std::string & folder);
/** Whether this process may read the file; whether it may create files in the folder (errno
 * set when not). */
bool
ComboSegCanRead(const std::string & path);
bool
ComboSegCanWriteInFolder(const std::string & folder);
/** Flushes a stream and its file's data to the disk (fflush, then fsync); false on failure. */
bool
ComboSegFlushToDisk(FILE * f);
/** The running executable's path; empty when the system does not say. */
std::string
ComboSegExecutablePath();
/** The characters that separate a path's folders: "/", and on Windows also "\\". */
const char *
ComboSegPathSeparators();

/** Whether `text` ends with `suffix`; the second ignores ASCII case. */
bool
ComboSegEndsWith(const std::string & text, const std::string & suffix);
bool
ComboSegEndsWithNoCase(const std::string & text, const std::string & suffix);
std::string
ComboSegToLower(std::string text);
/** `text` without leading and trailing blanks (spaces, tabs, CR, LF). */
std::string
ComboSegTrim(const std::string & text);

/** Parses the whole of `text` (leading blanks allowed, as strtod does) as a number, "nan" and
 * "inf" included; false on anything else: empty, trailing garbage, out of range. */
bool
ComboSegParseDouble(const std::string & text, double & value);
/** The same for integers. */
bool
ComboSegParseInt(const std::string & text, long long & value);

/** `text` with bytes that are not printable ASCII (control characters, invalid or foreign
 * bytes) written as \xHH, so that a corrupted file cannot garble a user's terminal. Valid UTF-8
 * letters are kept. */
std::string
ComboSegPrintable(const std::string & text);

/** What a user reads of an exception: an itk::ExceptionObject's description without ITK's
 * "file:line:" and "ITK ERROR:" prefixes, any other exception's what(), made printable. */
std::string
ComboSegUserMessage(const std::exception & error);

} // namespace itk

#endif
