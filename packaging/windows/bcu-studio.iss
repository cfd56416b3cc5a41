; Inno Setup 6 script: BCU Studio's Windows installer over the PyInstaller folder.
; UNTESTED here (no Windows on the build machines): it is built by the windows-latest job of
; .github/workflows/installers.yml. See packaging/README.md.
;
; First build the folder (from the repository root, in a venv with the project and PyInstaller installed):
;     set BCU_FLAVOUR=cpu
;     python -m PyInstaller --noconfirm --distpath packaging\dist --workpath packaging\build\pyi-cpu packaging\bcu_studio.spec
; then:
;     "%ProgramFiles(x86)%\Inno Setup 6\ISCC.exe" /DAppVersion=0.1.0 /DFlavour=cpu packaging\windows\bcu-studio.iss
; which writes packaging\dist\bcu-studio-cpu-0.1.0-windows-x64-setup.exe.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef Flavour
  #define Flavour "cpu"
#endif
#define AppName "BCU Studio"
#define BundleDir "..\dist\bcu-studio-" + Flavour

[Setup]
; AppId identifies the app for upgrades and uninstall: never change it.
AppId={{6C1E0B7A-2F4D-4E8B-9A51-3D7C2B8E4F10}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=BCU Studio developers
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
; per-user install by default (no UAC prompt); the user may choose an all-users install instead
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=commandline dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\dist
OutputBaseFilename=bcu-studio-{#Flavour}-{#AppVersion}-windows-x64-setup
SetupIconFile=..\..\resources\icons\bcu-studio.ico
UninstallDisplayIcon={app}\bcu-gui.exe
UninstallDisplayName={#AppName} {#AppVersion}
; ~1 GB of mostly binary files: fast LZMA2, multi-threaded, solid
Compression=lzma2/fast
SolidCompression=yes
LZMAUseSeparateProcess=yes
LZMANumBlockThreads=4
ChangesEnvironment=yes
WizardStyle=modern

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add the 'bcu' command line to PATH (for the current user)"; Flags: unchecked

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\bcu-gui.exe"; WorkingDir: "{userdocs}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\bcu-gui.exe"; WorkingDir: "{userdocs}"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; Tasks: addtopath; Check: NeedsAddPath(ExpandConstant('{app}'))

[Run]
Filename: "{app}\bcu-gui.exe"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Paths: string;
begin
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Paths) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Paths) + ';') = 0;
end;

procedure RemoveFromPath(Dir: string);
var
  Paths: string;
  P: Integer;
begin
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Paths) then
    exit;
  P := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Paths) + ';');
  if P = 0 then
    exit;
  { P is where ';' + Dir + ';' starts in ';' + Paths + ';', so Dir itself starts at P in Paths: remove it with
    the ';' before it, or with the one after it when it is the first entry }
  if P = 1 then
    Delete(Paths, 1, Length(Dir) + 1)
  else
    Delete(Paths, P - 1, Length(Dir) + 1);
  RegWriteExpandStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Paths);
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usPostUninstall then
    RemoveFromPath(ExpandConstant('{app}'));
end;
