namespace MegaNet.Store.Tests;

/// <summary>Option validation: the test kit's options pass, and each bad value is refused naming the option.</summary>
public sealed class StoreOptionsTests
{
    public static TheoryData<string, Action<StoreOptions>> BadSettings => new()
    {
        { nameof(StoreOptions.ShutdownTimeout), o => o.ShutdownTimeout = TimeSpan.Zero },
        { nameof(StoreOptions.ShutdownTimeout), o => o.ShutdownTimeout = TimeSpan.FromHours(2) },
        { nameof(StoreOptions.CheckpointInterval), o => o.CheckpointInterval = TimeSpan.FromMilliseconds(1) },
        { nameof(StoreOptions.NodeSecretKey), o => o.NodeSecretKey = new byte[32] },
        { nameof(StoreOptions.MinFreeDiskBytes), o => o.MinFreeDiskBytes = -1 },
        { nameof(StoreOptions.MailboxReportedFromPercent), o => o.MailboxReportedFromPercent = 0 },
        { nameof(StoreOptions.MaxHeldBytes), o => o.MaxHeldBytes = -1 },
        { nameof(StoreOptions.MailboxReportedFromPercent), o => o.MailboxReportedFromPercent = 101 },
        { nameof(StoreOptions.GroupsInFlight), o => o.GroupsInFlight = 0 },
        { nameof(StoreOptions.GroupsInFlight), o => o.GroupsInFlight = 9 },
        { nameof(StoreOptions.ApplyThreads), o => o.ApplyThreads = 0 },
        { nameof(StoreOptions.ApplyThreads), o => o.ApplyThreads = 9 },
    };

    [Fact]
    public void Defaults_validate()
    {
        StoreOptions options = StoreTestKit.Options(Path.GetTempPath());
        options.Validate();
        Assert.Equal(TimeSpan.FromSeconds(60), options.ShutdownTimeout);
        Assert.Equal(2, options.GroupsInFlight);
        Assert.Equal(1, options.ApplyThreads);
    }

    [Theory]
    [MemberData(nameof(BadSettings))]
    public void Bad_setting_is_named(string named, Action<StoreOptions> spoil)
    {
        StoreOptions options = StoreTestKit.Options(Path.GetTempPath());
        spoil(options);
        ArgumentException e = Assert.ThrowsAny<ArgumentException>(options.Validate);
        Assert.Contains(named, e.Message, StringComparison.Ordinal);
    }
}
