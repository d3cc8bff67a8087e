using System.Globalization;

namespace MegaNet.Node.Benchmarking;

/// <summary>
/// CPU time taken by this process and, on Linux, by the whole machine (<c>/proc/stat</c>) at one moment, so that a
/// load run can say how busy its cores were: on a machine the node shares with the load client, a node that is not
/// CPU bound (idle cores) and one that is (none) call for different readings of the same rate.
/// </summary>
/// <param name="Process">This process's CPU time (user and kernel).</param>
/// <param name="MachineBusy">Ticks the machine's cores spent busy (user, nice, system, irq, softirq), or −1 where
/// that is not known (not Linux, or <c>/proc/stat</c> unreadable).</param>
/// <param name="MachineTotal">Ticks in all, idle, I/O wait and steal included (−1 where unknown).</param>
/// <param name="MachineCores">The cores <c>/proc/stat</c> counts (in a container, the host's; 0 where unknown).</param>
/// <param name="Threads">Ticks (user and kernel) of each of this process's threads by id, with its name, from
/// <c>/proc/self/task</c> (Linux; null elsewhere): a thread near a whole core is a stage that does not spread over
/// cores, whatever the process's total says. A thread that ended before the later sample is not in it.</param>
internal readonly record struct CpuUse(TimeSpan Process, long MachineBusy, long MachineTotal, int MachineCores = 0,
    IReadOnlyDictionary<int, (string Name, long Ticks)>? Threads = null)
{
    // The kernel's USER_HZ, the unit of /proc's tick counts: 100 in the Linux ABI on every architecture .NET runs on.
    private const double TicksPerSecond = 100;

    /// <summary>Now.</summary>
    public static CpuUse Now()
    {
        TimeSpan process = Environment.CpuUsage.TotalTime;
        if (OperatingSystem.IsLinux())
        {
            try
            {
                using var reader = new StreamReader("/proc/stat");
                if (ParseProcStat(reader.ReadLine()) is { } machine)
                {
                    // One "cpuN" line per core follows the total.
                    int cores = 0;
                    while (reader.ReadLine() is { } line && line.StartsWith("cpu", StringComparison.Ordinal))
                    {
                        cores++;
                    }

                    if (cores > 0)
                    {
                        return new CpuUse(process, machine.Busy, machine.Total, cores, ThreadTicks());
                    }
                }
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return new CpuUse(process, -1, -1);
    }

    // Each thread's ticks now; a thread that ends while it is read is left out.
    private static Dictionary<int, (string Name, long Ticks)>? ThreadTicks()
    {
        var threads = new Dictionary<int, (string, long)>();
        try
        {
            foreach (string task in Directory.EnumerateDirectories("/proc/self/task"))
            {
                try
                {
                    if (int.TryParse(Path.GetFileName(task), NumberStyles.None, CultureInfo.InvariantCulture, out int id)
                        && ParseTaskStat(File.ReadAllText(Path.Combine(task, "stat"))) is { } stat)
                    {
                        threads[id] = stat;
                    }
                }
                catch (IOException)
                {
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        return threads;
    }

    /// <summary>A thread's name and ticks (user and kernel) from its <c>/proc/…/task/ID/stat</c> line (<c>ID (name)
    /// state ppid … utime stime …</c>; the name may hold spaces and parentheses, so the fields count from its last
    /// <c>)</c>), or null when it is not one.</summary>
    internal static (string Name, long Ticks)? ParseTaskStat(string? line)
    {
        int open = line?.IndexOf('(', StringComparison.Ordinal) ?? -1;
        int close = line?.LastIndexOf(')') ?? -1;
        if (line is null || open < 0 || close < open)
        {
            return null;
        }

        // After the name: state (0), ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt, majflt, cmajflt,
        // utime (11), stime (12).
        string[] fields = line[(close + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return fields.Length > 12
            && long.TryParse(fields[11], NumberStyles.None, CultureInfo.InvariantCulture, out long user)
            && long.TryParse(fields[12], NumberStyles.None, CultureInfo.InvariantCulture, out long kernel)
            ? (line[(open + 1)..close], user + kernel)
            : null;
    }

    /// <summary>Busy and total ticks from <c>/proc/stat</c>'s first line (<c>cpu  user nice system idle iowait irq
    /// softirq steal guest guest_nice</c>; guest time is already in user and nice), or null when it is not one.</summary>
    internal static (long Busy, long Total)? ParseProcStat(string? line)
    {
        if (line is null || !line.StartsWith("cpu ", StringComparison.Ordinal))
        {
            return null;
        }

        string[] fields = line[4..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length < 4)
        {
            return null;
        }

        var ticks = new long[Math.Min(fields.Length, 8)];
        for (int i = 0; i < ticks.Length; i++)
        {
            if (!long.TryParse(fields[i], NumberStyles.None, CultureInfo.InvariantCulture, out ticks[i]))
            {
                return null;
            }
        }

        // user, nice, system, irq and softirq are work; idle, iowait and steal (a hypervisor's other guests) are not.
        long busy = ticks[0] + ticks[1] + ticks[2] + (ticks.Length > 5 ? ticks[5] : 0) + (ticks.Length > 6 ? ticks[6] : 0);
        return (busy, ticks.Sum());
    }

    /// <summary>What was used between <paramref name="start"/> and <paramref name="end"/>, <paramref name="seconds"/> apart.</summary>
    public static CpuSpent Between(CpuUse start, CpuUse end, double seconds)
    {
        double processCores = seconds > 0 ? (end.Process - start.Process).TotalSeconds / seconds : double.NaN;
        double machineCores = double.NaN;
        long total = end.MachineTotal - start.MachineTotal;
        if (start.MachineTotal >= 0 && end.MachineTotal >= 0 && total > 0 && end.MachineCores > 0)
        {
            machineCores = end.MachineCores * (double)(end.MachineBusy - start.MachineBusy) / total;
        }

        string? busiest = null;
        double busiestCores = double.NaN;
        if (start.Threads is { } before && end.Threads is { } after && seconds > 0)
        {
            foreach ((int id, (string name, long ticks)) in after)
            {
                // A thread started during the phase spent all its ticks in it.
                double cores = (ticks - (before.TryGetValue(id, out (string, long Ticks) was) ? was.Ticks : 0)) / TicksPerSecond / seconds;
                if (busiest is null || cores > busiestCores)
                {
                    (busiest, busiestCores) = (name, cores);
                }
            }
        }

        return new CpuSpent(processCores, machineCores, end.MachineCores, busiest, busiestCores);
    }
}

/// <summary>Cores busy on average over a phase: this process's and the whole machine's (NaN where unknown), of the
/// machine's <paramref name="LogicalCores"/> (0 where unknown), and this process's busiest thread with its share of a
/// core (null and NaN where unknown).</summary>
public readonly record struct CpuSpent(double ProcessCores, double MachineCores, int LogicalCores, string? BusiestThread = null, double BusiestThreadCores = double.NaN);
